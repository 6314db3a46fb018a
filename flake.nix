{
  description = "unnar: serve any file of a Nix binary cache over plain HTTP, unpacked on the fly";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ];
      forAllSystems = f: lib.genAttrs systems (system: f system nixpkgs.legacyPackages.${system});
    in
    {
      # The package (nix/package.nix: buildNpmPackage, dependencies from package-lock.json).
      packages = forAllSystems (system: pkgs: rec {
        unnar = pkgs.callPackage ./nix/package.nix { };
        default = unnar;
      });

      apps = forAllSystems (system: pkgs: {
        default = {
          type = "app";
          program = lib.getExe self.packages.${system}.default;
          meta.description = "unnar HTTP server";
        };
      });

      overlays.default = final: prev: {
        unnar = final.callPackage ./nix/package.nix { };
      };

      # services.unnar (nix/module.nix; every setting, see nix/settings.nix).
      nixosModules.default = { imports = [ ./nix/module.nix ]; };
      nixosModules.unnar = self.nixosModules.default;

      devShells = forAllSystems (system: pkgs: {
        default = pkgs.mkShell {
          packages = with pkgs; [
            nodejs_20 # npm ci / npm test
            typescript
            python3 # node-gyp, for zstd-napi
            xz # used by unnar when on PATH
            zstd
            nix # the reference tests (nix store cat)
            nginx # the scale-out test
            wrk # npm run bench
            nghttp2 # h2load, npm run bench (row 8)
          ];
        };
      });

      checks = forAllSystems (system: pkgs: {
        package = self.packages.${system}.default;
      } // lib.optionalAttrs pkgs.stdenv.hostPlatform.isLinux {
        # A NixOS VM running services.unnar against file:// caches (nix/vm-test.nix).
        vm = import ./nix/vm-test.nix { inherit pkgs; module = self.nixosModules.default; };
      });
    };
}
