# NixOS module: services.unnar.
#
# Every unnar setting is an option of the same name as in nix/settings.nix (the one table mapping
# option -> flag -> environment variable); the service gets them as environment variables. Options
# left null are not set, so unnar's own default applies (docs/configuration.md).
#
# Secrets only come from files, read by systemd at start (LoadCredential=, EnvironmentFile=) and
# never copied into the world-readable Nix store: netrcFile, upstreamTokensFile, environmentFile.
# unnar's inline `--upstream-tokens` (UNNAR_UPSTREAM_TOKENS) is deliberately not an option, and
# extraEnvironment refuses it.
{ config, lib, pkgs, ... }:
let
  cfg = config.services.unnar;
  table = import ./settings.nix;
  inherit (lib) mkOption types;

  typeOf = s: {
    port = types.port;
    str = types.str;
    absolutePath = types.strMatching "/.*";
    count = types.ints.positive;
    # unnar's range (src/config.ts parseSeconds): at least 1 ms (0 is refused, it would turn limits off
    # or fire at once), at most what node's timers hold (2^31 - 1 ms).
    seconds = types.numbers.between 0.001 2147483;
    # `10G`, `20%`, or bytes; unnar checks the text and names it in its error.
    size = types.either types.ints.unsigned types.str;
    enum = types.enum (s.values or [ ]);
    # `nonEmpty`: `[ ]` would set the variable empty, which unnar refuses (upstreams) or reads as its
    # default (storeDirs); null is the way to ask for the default.
    list = (if s.nonEmpty or false then types.nonEmptyListOf else types.listOf) types.str;
    # A string, not a Nix path: a path literal would be copied into the Nix store.
    credential = types.strMatching "/.*";
  }.${s.kind};

  settingOption = name: s: mkOption ({
    type = if s.nullable or true then types.nullOr (typeOf s) else typeOf s;
    default = s.default or null;
    description = "${s.description}\n\nSets `${s.env}` (unnar's `${s.flag}`).";
  } // lib.optionalAttrs (s ? example) { inherit (s) example; });

  settingOptions = lib.mapAttrs settingOption (lib.filterAttrs (name: _: lib.elem name table.optionNames) table.settings);

  # The port in "host:port" / ":port" / "[v6]:port", or null. Leading zeros are dropped, as unnar reads
  # them (lib.toInt refuses "080" as ambiguous); more than 5 digits is out of range (65536, refused by
  # an assertion below) rather than an overflow in toInt.
  portIn = addr:
    let m = if addr == null then null else builtins.match ".*:0*([0-9]+)" addr;
    in if m == null then null
    else if builtins.stringLength (builtins.head m) > 5 then 65536
    else lib.toInt (builtins.head m);
  # The main listener's TCP port (none with `socket`) and a separate metrics listener's.
  httpPort = if portIn cfg.listen != null then portIn cfg.listen else cfg.port;
  tcpPorts = lib.optional (cfg.socket == null) httpPort;
  boundPorts = tcpPorts ++ lib.optional (portIn cfg.metricsListen != null) (portIn cfg.metricsListen);
  needsBindCap = lib.any (p: p > 0 && p < 1024) boundPorts;

  cacheDirName = lib.removePrefix "/var/cache/" cfg.cacheDir;
  managedCacheDir = lib.hasPrefix "/var/cache/" cfg.cacheDir && cacheDirName != "";

  secretNames = table.secretEnvNames ++ [ "AWS_SECRET_ACCESS_KEY" "AWS_SESSION_TOKEN" ];
  credentialsInUrl = url: builtins.match "[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*@.*" url != null;
in
{
  options.services.unnar = settingOptions // {
    enable = lib.mkEnableOption "unnar, which serves the files of Nix binary caches over HTTP";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ./package.nix { };
      defaultText = lib.literalMD "unnar built from this repository (`nix/package.nix`)";
      description = "The unnar package to run.";
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open the HTTP port (`port`, or the port in `listen`; none with `socket`) in the firewall. A separate metrics port is not opened.";
    };

    extraEnvironment = mkOption {
      type = types.attrsOf types.str;
      default = { };
      example = { AWS_PROFILE = "cache"; AWS_CONFIG_FILE = "/etc/unnar/aws-config"; };
      description = ''
        More environment variables for unnar (they override the ones set from options). They end up
        in the world-readable Nix store, so no secrets: `UNNAR_UPSTREAM_TOKENS`,
        `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN` are refused; use `upstreamTokensFile` and
        `environmentFile`.
      '';
    };

    environmentFile = mkOption {
      type = types.nullOr (types.strMatching "/.*");
      default = null;
      example = "/run/secrets/unnar.env";
      description = ''
        A file of `NAME=value` lines read by systemd at start (`EnvironmentFile=`), for secrets such
        as S3 credentials (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`). Not copied to the Nix store.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.host == null || cfg.listen == null;
        message = "services.unnar: set either `host` (with `port`) or `listen`, not both.";
      }
      {
        assertion = cfg.socket == null || lib.hasPrefix "/run/unnar/" cfg.socket;
        message = "services.unnar.socket must be in /run/unnar/ (the service may not write anywhere else), e.g. /run/unnar/unnar.sock.";
      }
      {
        assertion = lib.all (p: p == null || p <= 65535) [ (portIn cfg.listen) (portIn cfg.metricsListen) ];
        message = "services.unnar: the port in `listen` or `metricsListen` is not a port number (0 to 65535).";
      }
      {
        # The unit's final environment, so also what other modules put into
        # systemd.services.unnar.environment.
        assertion = lib.intersectLists (lib.attrNames config.systemd.services.unnar.environment) secretNames == [ ];
        message = "services.unnar.extraEnvironment must not carry secrets (${lib.concatStringsSep ", " secretNames}), nor may systemd.services.unnar.environment: they would be world-readable in the Nix store. Use upstreamTokensFile or environmentFile.";
      }
    ];

    warnings = lib.optional (lib.any credentialsInUrl cfg.upstreams) ''
      services.unnar.upstreams: a URL contains credentials, which end up world-readable in the Nix
      store. Put them into services.unnar.netrcFile instead.
    '';

    networking.firewall.allowedTCPPorts = lib.mkIf cfg.openFirewall tcpPorts;

    systemd.services.unnar = {
      description = "unnar: files of Nix binary caches over HTTP";
      wantedBy = [ "multi-user.target" ];
      after = [ "network.target" ];

      environment = table.toEnvironment cfg // lib.mapAttrs (_: table.escapeSpecifiers) cfg.extraEnvironment;

      serviceConfig = {
        Type = "exec";
        ExecStart = lib.getExe cfg.package;
        Restart = "on-failure";
        RestartSec = 2;
        # Exit status 2 is a bad setting (unnar names it in the journal): restarting cannot help.
        RestartPreventExitStatus = 2;
        # unnar stops accepting on SIGTERM and lets running requests finish for shutdownTimeout
        # seconds; systemd waits a little longer before SIGKILL. `mixed`: only the main process gets
        # SIGTERM, so the xz/zstd decoders of downloads still in flight are not killed under it.
        KillSignal = "SIGTERM";
        KillMode = "mixed";
        TimeoutStopSec = builtins.ceil cfg.shutdownTimeout + 15;

        # Secret files, handed over by systemd; the variables point at $CREDENTIALS_DIRECTORY (%d).
        LoadCredential = table.toCredentials cfg;
        EnvironmentFile = lib.optional (cfg.environmentFile != null) cfg.environmentFile;

        DynamicUser = true;
        # /var/cache/<name>, owned by the dynamic user and kept across restarts.
        CacheDirectory = lib.optional managedCacheDir cacheDirName;
        CacheDirectoryMode = "0700";
        ReadWritePaths = lib.optional (!managedCacheDir) cfg.cacheDir;
        # /run/unnar: where `socket` may be created.
        RuntimeDirectory = "unnar";
        RuntimeDirectoryMode = "0755";
        # Connecting to a unix socket needs write permission on it, and the dynamic user cannot give
        # the socket to another group (e.g. nginx's): with a socket, unnar creates it world-connectable
        # (umask 0). Nothing else becomes reachable: the cache directory is 0700, /tmp is private.
        UMask = if cfg.socket != null then "0000" else "0077";
        LimitNOFILE = 65536;

        # Hardening.
        CapabilityBoundingSet = if needsBindCap then [ "CAP_NET_BIND_SERVICE" ] else "";
        AmbientCapabilities = lib.optional needsBindCap "CAP_NET_BIND_SERVICE";
        # A capability inside a user namespace does not count for binding the host's ports.
        PrivateUsers = !needsBindCap;
        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ProtectHome = true; # so file:// upstreams must not be below /home, /root or /run/user
        PrivateTmp = true;
        PrivateDevices = true;
        DevicePolicy = "closed";
        ProtectHostname = true;
        ProtectClock = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectProc = "invisible";
        # No ProcSubset=pid: node reads /proc/meminfo and /proc/cpuinfo (os.totalmem(), os.cpus()).
        RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        RemoveIPC = true;
        # V8's JIT compiler writes machine code into memory and then executes it, which
        # MemoryDenyWriteExecute=true forbids: node would crash at start.
        MemoryDenyWriteExecute = false;
        SystemCallArchitectures = "native";
        SystemCallFilter = [ "@system-service" "~@privileged" ];
        # A filtered call fails with EPERM instead of killing node (libuv falls back, e.g. from
        # io_uring to its thread pool).
        SystemCallErrorNumber = "EPERM";
      };
    };
  };
}
