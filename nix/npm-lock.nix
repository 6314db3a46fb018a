# package-lock.json with the `resolved` URLs put back, for nixpkgs' importNpmLock.
#
# The lock is written with npm's `omit-lockfile-registry-resolved` (so it does not pin a registry
# mirror): its registry packages have `integrity` but no `resolved`. Both of nixpkgs' npm fetchers
# (fetchNpmDeps and importNpmLock) fetch only entries that have a `resolved` URL, so without this the
# offline build would find no dependency. npm's registry layout is fixed, so the URL follows from
# the name and version: <registry>/<name>/-/<name without scope>-<version>.tgz, and `integrity`
# (sha512) pins the bytes.
#
# Optional packages for another platform (the native binaries of typescript, esbuild and
# @mongodb-js/zstd for ~20 os/cpu/libc triples) keep no `resolved`: they are not downloaded, and npm
# skips them on this platform without fetching. `os`/`cpu`/`libc` null = keep every platform.
#
# Pure (builtins only): test/nix-packaging.test.ts evaluates it with nix-instantiate.
{ lock ? builtins.fromJSON (builtins.readFile ../package-lock.json)
, os ? null # npm's name: linux, darwin, ...
, cpu ? null # npm's name: x64, arm64, ...
, libc ? null # npm's name: glibc, musl
, registry ? "https://registry.npmjs.org"
}:
let
  inherit (builtins) elem elemAt filter mapAttrs match substring stringLength;

  hasPrefix = prefix: s: substring 0 (stringLength prefix) s == prefix;

  # npm's os/cpu fields: a list of allowed values, or of "!value" exclusions.
  allows = value: list:
    let positive = filter (x: !hasPrefix "!" x) list;
    in value == null || (!(elem "!${value}" list) && (positive == [ ] || elem value positive));

  forThisPlatform = pkg:
    allows os (pkg.os or [ ]) && allows cpu (pkg.cpu or [ ]) && allows libc (pkg.libc or [ ]);

  # "node_modules/a/node_modules/@s/b" -> "@s/b"; an alias entry names its package in `name`.
  packageName = path: pkg:
    pkg.name or (elemAt (match "(.*/)?node_modules/((@[^/]+/)?[^/]+)" path) 1);

  tarballUrl = name: version:
    let m = match "(@[^/]+/)?([^/]+)" name;
    in "${registry}/${name}/-/${elemAt m 1}-${version}.tgz";

  needsUrl = path: pkg:
    path != "" && !(pkg ? resolved) && pkg ? integrity && pkg ? version
    && !(pkg.link or false) && !(pkg.inBundle or false);

  fill = path: pkg:
    if needsUrl path pkg && forThisPlatform pkg
    then pkg // { resolved = tarballUrl (packageName path pkg) pkg.version; }
    else pkg;
in
lock // { packages = mapAttrs fill lock.packages; }
