{
  description = "unnar: serve any file of a Nix binary cache over plain HTTP, unpacked on the fly";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: {
        default = pkgs.buildNpmPackage {
          pname = "unnar";
          version = "0.1.0";
          src = self;
          nodejs = pkgs.nodejs_20;
          # Set to the hash nix reports on the first build (these machines cannot fetch nixpkgs).
          npmDepsHash = pkgs.lib.fakeHash;
          nativeBuildInputs = [ pkgs.python3 ];
          dontNpmBuild = false;
          meta.mainProgram = "unnar";
        };
      });

      apps = forAllSystems (pkgs: {
        default = {
          type = "app";
          program = "${self.packages.${pkgs.stdenv.hostPlatform.system}.default}/bin/unnar";
        };
      });

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell { packages = [ pkgs.nodejs_20 pkgs.typescript pkgs.nix pkgs.xz pkgs.zstd ]; };
      });
    };
}
