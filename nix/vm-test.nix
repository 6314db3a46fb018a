# NixOS VM test (flake check `vm`): services.unnar in a VM with two file:// binary caches,
#  1. test/fixtures/nix-caches/zstd (signed by the fixture key, zstd NARs with .ls listings): files
#     fetched with curl must hash to test/fixtures/nix-caches/manifest.json;
#  2. a cache written in the VM with `nix copy` (xz NARs, no listing, content-addressed): files must
#     equal the store path's own bytes;
# and the settings must reach the process: a `%` through systemd, secret files as credentials, a
# separate metrics listener.
{ pkgs, module }:
let
  inherit (pkgs) lib;
  fixtures = ../test/fixtures/nix-caches;
  manifest = lib.importJSON (fixtures + "/manifest.json");
  basic = "/nix/store/8gxcdyzlr8aa09pp43z8zbxd9zm00qzk-fixture-basic-1";
  expected = map
    (file: { url = "${basic}/${file}"; sha256 = manifest.${basic}.entries.${file}.sha256; })
    [ "bin/hello" "lib/blob.bin" "lib/libfoo.so.1.2" "share/doc/README" ];
  port = 8383;
  metricsPort = 9383;
in
pkgs.testers.runNixOSTest {
  name = "unnar";

  nodes.machine = { ... }: {
    imports = [ module ];

    services.unnar = {
      enable = true;
      inherit port;
      upstreams = [ "file://${fixtures + "/zstd"}" "file:///srv/nix-cache" ];
      trustedPublicKeys = [ (lib.fileContents (fixtures + "/test-key.pub")) ];
      cacheSize = "50%";
      logLevel = "debug";
      openFirewall = true;
      metricsListen = "127.0.0.1:${toString metricsPort}";
      netrcFile = "/etc/unnar-test/netrc";
      upstreamTokensFile = "/etc/unnar-test/upstream-tokens";
    };

    environment.etc."unnar-test/netrc" = {
      text = "machine cache.example.invalid login unnar password not-a-secret\n";
      mode = "0600";
    };
    environment.etc."unnar-test/upstream-tokens" = {
      text = "# test token\ncache.example.invalid=not-a-secret-token\n";
      mode = "0600";
    };
    nix.settings.experimental-features = [ "nix-command" ];
    environment.systemPackages = [ pkgs.curl ];
  };

  testScript = ''
    import json

    base = "http://127.0.0.1:${toString port}"
    expected = json.loads('${builtins.toJSON expected}')

    machine.wait_for_unit("unnar.service")
    machine.wait_for_open_port(${toString port})
    machine.succeed(f"curl -fsS {base}/healthz | grep -x OK")
    machine.wait_for_open_port(${toString metricsPort})
    machine.succeed("curl -fsS http://127.0.0.1:${toString metricsPort}/metrics | grep -q '^# HELP'")

    with subtest("fixture cache (zstd, signed): bytes match the manifest"):
        for e in expected:
            out = machine.succeed(f"curl -fsS {base}{e['url']} | sha256sum")
            assert out.split()[0] == e["sha256"], f"{e['url']}: got {out}"
        # the decompressed NAR was kept in the CacheDirectory (DynamicUser: /var/cache/private)
        machine.succeed("test -n \"$(ls -A /var/cache/private/unnar)\"")

    with subtest("cache written with nix copy (xz, content-addressed): bytes match the store"):
        machine.succeed(
            "mkdir -p /tmp/unnar-test"
            " && printf 'hello from the vm\\n' > /tmp/unnar-test/greeting.txt"
            " && head -c 300000 /dev/urandom > /tmp/unnar-test/random.bin"
        )
        path = machine.succeed("nix-store --add /tmp/unnar-test").strip()
        machine.succeed(f"nix copy --to file:///srv/nix-cache {path}")
        # /srv/nix-cache did not exist when unnar started; a restart also exercises the stop
        machine.succeed("timeout 60 systemctl restart unnar.service")
        machine.wait_for_unit("unnar.service")
        machine.wait_for_open_port(${toString port})
        for name in ["greeting.txt", "random.bin"]:
            machine.succeed(f"curl -fsS {base}{path}/{name} -o /tmp/got && cmp /tmp/got {path}/{name}")

    with subtest("settings reach the process"):
        pid = machine.succeed("systemctl show -p MainPID --value unnar.service").strip()
        env = machine.succeed(f"tr '\\0' '\\n' < /proc/{pid}/environ").splitlines()
        assert "UNNAR_CACHE_SIZE=50%" in env, env
        assert "NETRC=/run/credentials/unnar.service/netrc" in env, env
        assert any(v.startswith("TRUSTED_PUBLIC_KEYS=nar-serve-test-1:") for v in env), env
        assert "UNNAR_UPSTREAM_TOKENS_FILE=/run/credentials/unnar.service/upstream-tokens" in env, env
        assert not any("not-a-secret-token" in v for v in env), "a token reached the environment"
        machine.succeed("cmp /run/credentials/unnar.service/netrc /etc/unnar-test/netrc")
        machine.succeed("cmp /run/credentials/unnar.service/upstream-tokens /etc/unnar-test/upstream-tokens")
        assert machine.succeed("systemctl show -p NRestarts --value unnar.service").strip() == "0"
        machine.log(machine.succeed("systemd-analyze security unnar.service | tail -n 1"))
  '';
}
