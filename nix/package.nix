# unnar as a Nix package: `pkgs.callPackage ./nix/package.nix { }`.
{ lib
, stdenv
, buildNpmPackage
, importNpmLock
, nodejs_20
, makeWrapper
, bzip2
, xz
, zstd
}:
let
  packageJson = lib.importJSON ../package.json;
  platform = stdenv.hostPlatform;

  # Only what the build reads (`npm run build` compiles tsconfig.build.json, which extends
  # tsconfig.json and takes src/ alone): the compiled server is dist/src, its assets public/.
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../package.json
      ../package-lock.json
      ../tsconfig.json
      ../tsconfig.build.json
      ../src
      ../public
    ];
  };
in
buildNpmPackage {
  pname = "unnar";
  inherit (packageJson) version;
  inherit src;
  nodejs = nodejs_20;

  # Dependencies: importNpmLock instead of fetchNpmDeps + npmDepsHash. It fetches every package with
  # fetchurl pinned by the lock's own `integrity` (sha512), so there is no extra hash to keep in sync
  # with package-lock.json (and none that could be computed here: these machines cannot reach
  # nixpkgs). nix/npm-lock.nix puts back the registry URLs the lock omits (see there); both nixpkgs
  # fetchers would otherwise see no dependency to download.
  npmDeps = importNpmLock {
    npmRoot = src;
    package = packageJson;
    packageLock = import ./npm-lock.nix {
      lock = lib.importJSON ../package-lock.json;
      os = if platform.isDarwin then "darwin" else platform.parsed.kernel.name;
      cpu =
        if platform.isx86_64 then "x64"
        else if platform.isAarch64 then "arm64"
        else platform.parsed.cpu.name;
      libc = if platform.isMusl then "musl" else if platform.isLinux then "glibc" else null;
    };
  };
  npmConfigHook = importNpmLock.npmConfigHook;

  # Native addons (compiled by `npm rebuild` with node-gyp; nodejs.python is added by
  # buildNpmPackage):
  # - zstd-napi: from its bundled zstd sources. prebuild-install would try to download a binary
  #   from GitHub first (no network in the sandbox); this variable makes it go straight to node-gyp.
  # - lzma-native: on Linux from its bundled xz 5.2.3 sources too (its prebuilt liblzma is built
  #   without optimisation, see src/codecs/decompress.ts); on Darwin its prebuilt binary, because
  #   its source build patches config.sub with BSD `sed -i ''`.
  # - @mongodb-js/zstd: napi-rs prebuilt per platform (only needs libc, which node has loaded).
  env.npm_config_build_from_source = if platform.isLinux then "true" else "zstd-napi";

  nativeBuildInputs = [ makeWrapper ];

  # npmBuildHook runs `npm run build` (tsc -> dist/). The default npmInstallHook copies what
  # `npm pack` would publish, which depends on ignore files; install explicitly instead.
  installPhase = ''
    runHook preInstall

    npm prune --omit=dev --no-save $npmFlags "''${npmFlagsArray[@]}"
    find node_modules -maxdepth 1 -type d -empty -delete

    # Keep only the compiled addons of the native packages: their build trees hold object files,
    # the bundled xz/zstd sources and config.gypi (which refers to the node headers).
    for pkg in zstd-napi lzma-native; do
      build=node_modules/$pkg/build
      if [ -d "$build" ]; then
        mkdir -p "$TMPDIR/addons/$pkg"
        cp "$build"/Release/*.node "$TMPDIR/addons/$pkg/"
        rm -rf "$build"
        mkdir -p "$build/Release"
        cp "$TMPDIR/addons/$pkg"/*.node "$build/Release/"
      fi
    done

    dest=$out/lib/node_modules/unnar
    mkdir -p "$dest/dist" "$out/bin"
    cp -r dist/src "$dest/dist/src"
    cp -r public package.json node_modules "$dest/"

    # bzip2, xz and zstd on PATH: unnar decodes with them in a child process when present (faster than the
    # in-process fallbacks, see docs/benchmarks.md).
    makeWrapper ${nodejs_20}/bin/node "$out/bin/unnar" \
      --add-flags "$dest/dist/src/main.js" \
      --prefix PATH : ${lib.makeBinPath [ bzip2 xz zstd ]}

    runHook postInstall
  '';

  # `unnar --version` imports the whole server (codecs included), so it fails if an addon does not load.
  doInstallCheck = true;
  installCheckPhase = ''
    runHook preInstallCheck
    [ "$($out/bin/unnar --version)" = "${packageJson.version}" ]
    runHook postInstallCheck
  '';

  meta = {
    description = packageJson.description;
    license = lib.licenses.mit;
    mainProgram = "unnar";
    platforms = lib.platforms.linux ++ lib.platforms.darwin;
  };
}
