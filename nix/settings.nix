# unnar's settings as the NixOS module exposes them: one entry per command-line flag of
# src/config.ts (`FLAGS`), naming the option, the flag and the environment variable.
#
# This file is pure (builtins only, no nixpkgs) on purpose: nix/module.nix builds its options and
# the service environment from it, and test/nix-packaging.test.ts evaluates it with
# `nix-instantiate --eval --strict --json` to check that every flag in FLAGS is covered and that
# the rendered environment is accepted by loadConfig. Add a flag to src/config.ts => add it here.
#
# Entry fields:
#   flag, env     the flag and environment variable of src/config.ts
#   kind          port | str | absolutePath | count | seconds | size | enum | list | credential | secret
#   values        (enum) the accepted values
#   separator     (list) how the list is joined into the variable
#   nonEmpty      (list) true: `[ ]` is refused (the variable would be empty); null asks for unnar's default
#   credential    (credential) the file is handed over with systemd's LoadCredential under this
#                 name and the variable points at `$CREDENTIALS_DIRECTORY/<name>` (`%d/<name>`)
#   nullable      false: the option always has a value (default: true, and null = unset, i.e. unnar's
#                 own default applies)
#   default       the module's default (null when absent)
#   option        false: deliberately NOT a module option (secrets that must come from a file;
#                 `viaOption` names the option that carries them instead)
let
  settings = {
    port = {
      flag = "--port";
      env = "PORT";
      kind = "port";
      nullable = false;
      default = 8383;
      description = "TCP port to listen on.";
    };
    host = {
      flag = "--host";
      env = "UNNAR_HOST";
      kind = "str";
      example = "127.0.0.1";
      description = "Address to listen on; null = all interfaces. Use either `host` (with `port`) or `listen`.";
    };
    listen = {
      flag = "--listen";
      env = "HTTP_ADDR";
      kind = "str";
      example = "127.0.0.1:8383";
      description = "nar-serve's `HTTP_ADDR`: `host:port`, `:port`, `[v6addr]:port` or a bare host; a port here overrides `port`. Prefer `host` and `port`.";
    };
    socket = {
      flag = "--socket";
      env = "UNNAR_SOCKET";
      kind = "absolutePath";
      example = "/run/unnar/unnar.sock";
      description = "Listen on this unix socket instead of TCP (`host`/`port`/`listen` are then unused; a separate `metricsListen` still uses TCP). Must lie in `/run/unnar/` (the service's RuntimeDirectory, the only place besides its cache where it may create files). The socket is world-connectable, like a TCP port on the machine: the dynamic user cannot hand it to another group (e.g. nginx's).";
    };
    upstreams = {
      flag = "--upstream";
      env = "NIX_CACHE_URL";
      kind = "list";
      separator = " ";
      nonEmpty = true;
      nullable = false;
      default = [ "https://cache.nixos.org" ];
      example = [ "https://cache.nixos.org" "s3://my-cache?region=eu-west-1" "file:///srv/nix-cache" ];
      description = "Binary cache URLs, highest priority first (`http://`, `https://`, `file:///dir`, `s3://bucket?...`). Do not put credentials into these URLs (they would be world-readable in the Nix store): use `netrcFile`, `upstreamTokensFile` or, for S3, `environmentFile`.";
    };
    upstreamOrder = {
      flag = "--upstream-order";
      env = "UNNAR_UPSTREAM_ORDER";
      kind = "enum";
      values = [ "priority" "configured" ];
      description = "`priority`: order upstreams by their `Priority` (URL `?priority=N`, else `nix-cache-info`), as Nix does; `configured`: exactly the order of `upstreams`. Null = unnar's default (`priority`).";
    };
    lookup = {
      flag = "--lookup";
      env = "UNNAR_LOOKUP";
      kind = "enum";
      values = [ "sequential" "parallel" ];
      description = "`sequential`: ask the upstreams for a narinfo one after another; `parallel`: ask all at once and take the best-priority hit. Null = unnar's default (`sequential`).";
    };
    trustedPublicKeys = {
      flag = "--trusted-public-keys";
      env = "TRUSTED_PUBLIC_KEYS";
      kind = "list";
      separator = " ";
      example = [ "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=" ];
      description = "Keys (`name:base64`) narinfos must be signed with. Null = unset (cache.nixos.org must be signed by `cache.nixos.org-1`, other upstreams are unchecked); `[ ]` turns checking off.";
    };
    storeDirs = {
      flag = "--store-dirs";
      env = "UNNAR_STORE_DIRS";
      kind = "list";
      separator = " ";
      nonEmpty = true;
      example = [ "/nix/store" ];
      description = "Store directories served. Null = unnar's default: `/nix/store` plus every `StoreDir` an upstream declares.";
    };
    verify = {
      flag = "--verify";
      env = "UNNAR_VERIFY";
      kind = "enum";
      values = [ "strict" "stream" ];
      description = "`strict`: no response completes before its bytes matched the NAR's NarHash (the last byte of a file from a NAR still downloading waits for it; a mismatch cuts the connection); `stream`: responses may complete with unverified bytes (byte-range fetches of uncompressed NARs, files sent before their NAR is checked). Null = unnar's default (`strict`).";
    };
    cacheDir = {
      flag = "--cache-dir";
      env = "UNNAR_CACHE_DIR";
      kind = "absolutePath";
      nullable = false;
      default = "/var/cache/unnar";
      description = "Where decompressed NARs are kept. Below `/var/cache/` systemd creates it (`CacheDirectory=`) for the service's dynamic user; anywhere else it must already exist and be writable by that user.";
    };
    cacheSize = {
      flag = "--cache-size";
      env = "UNNAR_CACHE_SIZE";
      kind = "size";
      example = "20%";
      description = "Bound on the kept NARs: bytes with an optional `K`/`M`/`G`/`T` suffix, or `N%` of the filesystem holding the cache. Null = unnar's default (`10G`).";
    };
    maxNarSize = {
      flag = "--max-nar-size";
      env = "UNNAR_MAX_NAR_SIZE";
      kind = "size";
      example = "4G";
      description = "NARs larger than this are streamed through a temporary file and not kept. Null = a quarter of the cache size.";
    };
    memoryCacheSize = {
      flag = "--memory-cache-size";
      env = "UNNAR_MEMORY_CACHE_SIZE";
      kind = "size";
      example = "512M";
      description = "Memory for hot files of cached NARs (small files once read, bigger ones from their second request; at most half of it per file); 0 = none. Null = unnar's default (`128M`).";
    };
    maxDownloads = {
      flag = "--max-downloads";
      env = "UNNAR_MAX_DOWNLOADS";
      kind = "count";
      description = "Concurrent upstream NAR downloads; more wait in a queue. Null = unnar's default (8).";
    };
    maxConnections = {
      flag = "--max-connections";
      env = "UNNAR_MAX_CONNECTIONS";
      kind = "count";
      description = "Limit on open client connections. Null = unnar's default (10000).";
    };
    maxUrlLength = {
      flag = "--max-url-length";
      env = "UNNAR_MAX_URL_LENGTH";
      kind = "count";
      description = "Longest request URL accepted. Null = unnar's default (8192).";
    };
    negativeTtl = {
      flag = "--negative-ttl";
      env = "UNNAR_NEGATIVE_TTL";
      kind = "seconds";
      description = "Seconds a \"no upstream has this path\" answer is remembered. Null = unnar's default (60).";
    };
    upstreamTimeout = {
      flag = "--upstream-timeout";
      env = "UNNAR_UPSTREAM_TIMEOUT";
      kind = "seconds";
      description = "Seconds from a request to an upstream to its response headers. Null = unnar's default (30).";
    };
    upstreamConnectTimeout = {
      flag = "--upstream-connect-timeout";
      env = "UNNAR_UPSTREAM_CONNECT_TIMEOUT";
      kind = "seconds";
      description = "Seconds to connect to an upstream. Null = unnar's default (10).";
    };
    upstreamIdleTimeout = {
      flag = "--upstream-idle-timeout";
      env = "UNNAR_UPSTREAM_IDLE_TIMEOUT";
      kind = "seconds";
      description = "Longest silence, in seconds, between two chunks of an upstream body. Null = unnar's default (30).";
    };
    headerTimeout = {
      flag = "--header-timeout";
      env = "UNNAR_HEADER_TIMEOUT";
      kind = "seconds";
      description = "Seconds a client has to send its request headers. Null = unnar's default (20).";
    };
    keepAliveTimeout = {
      flag = "--keep-alive-timeout";
      env = "UNNAR_KEEP_ALIVE_TIMEOUT";
      kind = "seconds";
      description = "Seconds an idle keep-alive client connection is kept open. Null = unnar's default (5).";
    };
    shutdownTimeout = {
      flag = "--shutdown-timeout";
      env = "UNNAR_SHUTDOWN_TIMEOUT";
      kind = "seconds";
      nullable = false;
      default = 30;
      description = "Seconds in-flight responses may run on after SIGTERM (unnar's default is 30 too). systemd's `TimeoutStopSec` is set 15 s above it.";
    };
    logLevel = {
      flag = "--log-level";
      env = "LOG_LEVEL";
      kind = "enum";
      values = [ "debug" "info" "warn" "error" "silent" ];
      description = "Log level of the JSON lines on stderr (the journal). Null = unnar's default (`info`).";
    };
    metricsListen = {
      flag = "--metrics-listen";
      env = "UNNAR_METRICS_ADDR";
      kind = "str";
      example = "127.0.0.1:9383";
      description = "Where `/metrics` (Prometheus) is served: `main` (on the main listener), `off`, or a separate `host:port`. Null = unnar's default (`main`). `openFirewall` does not open a separate metrics port.";
    };
    domain = {
      flag = "--domain";
      env = "DOMAIN";
      kind = "str";
      example = "nix.example.org";
      description = "Subdomain mode: `<hash>.<domain>` serves that store path as a site root (needs a wildcard DNS record and certificate in front).";
    };
    netrcFile = {
      flag = "--netrc-file";
      env = "NETRC";
      kind = "credential";
      credential = "netrc";
      example = "/run/secrets/unnar-netrc";
      description = "A netrc file (Nix's format) with credentials for HTTP upstreams. Read by systemd (`LoadCredential`) at start, never copied into the Nix store; give it as a string, not a Nix path.";
    };
    upstreamTokensFile = {
      flag = "--upstream-tokens-file";
      env = "UNNAR_UPSTREAM_TOKENS_FILE";
      kind = "credential";
      credential = "upstream-tokens";
      example = "/run/secrets/unnar-upstream-tokens";
      description = "A file of bearer tokens for upstreams: `host=token` (or `host:port=token`) entries separated by whitespace, `#` comments. Read by systemd (`LoadCredential`) at start, never copied into the Nix store; give it as a string, not a Nix path.";
    };
    # A secret (src/config.ts SECRET_SETTINGS). The inline form would put the tokens into the unit
    # file, which is world-readable in the Nix store: the module only offers the file variant
    # (upstreamTokensFile) and refuses the variable in extraEnvironment.
    upstreamTokens = {
      flag = "--upstream-tokens";
      env = "UNNAR_UPSTREAM_TOKENS";
      kind = "secret";
      option = false;
      viaOption = "upstreamTokensFile";
      description = "Not an option: use `upstreamTokensFile`.";
    };
  };

  inherit (builtins) attrNames concatStringsSep filter listToAttrs map replaceStrings;

  isOption = name: settings.${name}.option or true;
  optionNames = filter isOption (attrNames settings);

  # systemd expands specifiers (`%n`, `%d`, ...) in Environment=; values are meant literally.
  escapeSpecifiers = replaceStrings [ "%" ] [ "%%" ];

  render = s: value:
    if s.kind == "credential" then "%d/${s.credential}"
    else if s.kind == "list" then escapeSpecifiers (concatStringsSep s.separator value)
    else escapeSpecifiers (toString value);

  setNames = cfg: filter (name: cfg.${name} or null != null) optionNames;
in
{
  inherit settings optionNames escapeSpecifiers;

  # Environment variable name of every setting (option name -> variable), for reading and testing.
  envNames = builtins.mapAttrs (_: s: s.env) settings;

  # The service's environment for option values `cfg` (null = left out), as systemd
  # Environment= values: `%` doubled, credentials as `%d/<name>`.
  toEnvironment = cfg:
    listToAttrs (map (name: { name = settings.${name}.env; value = render settings.${name} cfg.${name}; }) (setNames cfg));

  # LoadCredential= entries (`name:path`) for the credential files set in `cfg`.
  toCredentials = cfg:
    map (name: "${settings.${name}.credential}:${cfg.${name}}")
      (filter (name: settings.${name}.kind == "credential") (setNames cfg));

  # Variables that carry secrets and so may not be set through the module's plain environment.
  secretEnvNames = map (name: settings.${name}.env) (filter (name: settings.${name}.kind == "secret") (attrNames settings));
}
