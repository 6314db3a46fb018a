# Evaluates nix/module.nix with nixpkgs' real lib (`lib.evalModules`, `lib.types`), for
# test/nix-packaging.test.ts:
#
#   nix-instantiate --eval --strict --json test/nix/eval-module.nix -A service \
#     --argstr nixpkgsLib "$PWD/test/fixtures/nixpkgs-lib/lib" --argstr configJson '{"enable":true,...}'
#
# nixpkgs itself (packages, nixos/modules) is not available offline, only its lib/
# (vendored in test/fixtures/nixpkgs-lib). So the few NixOS options the module
# sets are declared here as plain options, with the types NixOS gives them (nixos/lib/systemd-lib.nix,
# systemd-unit-options.nix, modules/misc/assertions.nix, services/networking/firewall.nix), and the
# service is rendered into unit text the way NixOS' `serviceToUnit` does. Failed assertions and
# warnings are raised like NixOS' top-level does (`lib.asserts.checkAssertWarn`).
#
# Arguments:
#   nixpkgsLib   absolute path of nixpkgs' lib/ (default: test/fixtures/nixpkgs-lib/lib)
#   configJson   services.unnar's definitions, as JSON
#   extraModule  (--arg) one more module, for what JSON cannot say (Nix paths, mkForce, two
#                definitions of an option): e.g. `{ lib, ... }: { services.unnar.port = lib.mkForce 80; }`
#   casesJson    a JSON list of services.unnar definitions, for `cases`
#
# Attributes (select one with -A):
#   service   the unit: environment, serviceConfig, wantedBy, after, description, the rendered text,
#             the firewall's ports and the warnings; throws like nixos-rebuild on a failed assertion
#   options   services.unnar.*: type description and default of every option
#   docs      the options as the NixOS manual lists them (lib.optionAttrSetToDocList)
#   cases     for each of casesJson: whether it evaluates (`builtins.tryEval`: a type error or failed
#             assertion is `ok = false`, without its message) and then the service's environment
{ nixpkgsLib ? null, configJson ? "{}", extraModule ? { }, casesJson ? "[]" }:
let
  lib = import (if nixpkgsLib == null then ../fixtures/nixpkgs-lib/lib else /. + nixpkgsLib);
  inherit (lib) mkOption types;

  # --- The NixOS options services.unnar sets, as NixOS declares them. -----------------------------

  # nixos/lib/systemd-lib.nix
  unitNameType = types.strMatching "[a-zA-Z0-9@%:_.\\-]+[.](service|socket|device|mount|automount|swap|target|path|timer|scope|slice)";
  assertValueOneOf = name: values: group: attr:
    lib.optional (attr ? ${name} && !lib.elem attr.${name} values)
      "Systemd ${group} field `${name}' cannot have value `${toString attr.${name}}'.";
  checkUnitConfig = group: checks: attrs:
    let
      defs = lib.mapAttrs (_: v: if v._type or "" == "override" || v._type or "" == "if" then v.content else v) attrs;
      errors = lib.concatMap (c: c group defs) checks;
    in
    if errors == [ ] then true else builtins.trace (lib.concatStringsSep "\n" errors) false;
  toOption = x: if x == true then "true" else if x == false then "false" else toString x;
  attrsToSection = as: lib.concatStrings (lib.concatLists (lib.mapAttrsToList
    (name: value: map (x: "${name}=${toOption x}\n") (if lib.isList value then value else [ value ]))
    as));

  # nixos/lib/systemd-unit-options.nix
  checkService = checkUnitConfig "Service" [
    (assertValueOneOf "Type" [ "exec" "simple" "forking" "oneshot" "dbus" "notify" "notify-reload" "idle" ])
    (assertValueOneOf "Restart" [ "no" "on-success" "on-failure" "on-abnormal" "on-abort" "always" ])
  ];
  unitOption = lib.mkOptionType {
    name = "systemd option";
    merge = loc: defs:
      let defs' = lib.filterOverrides defs;
      in if lib.any (def: lib.isList def.value) defs' then lib.concatMap (def: lib.toList def.value) defs'
      else lib.mergeEqualOption loc defs';
  };
  unitList = description: mkOption { type = types.listOf unitNameType; default = [ ]; inherit description; };
  serviceOptions = {
    options = {
      enable = mkOption { type = types.bool; default = true; description = "Whether the unit exists."; };
      description = mkOption { type = types.singleLineStr; default = ""; description = "Description= of the unit."; };
      documentation = mkOption { type = types.listOf types.str; default = [ ]; description = "Documentation= URIs."; };
      wantedBy = unitList "Units that want this unit.";
      requiredBy = unitList "Units that require this unit.";
      wants = unitList "Wants=.";
      requires = unitList "Requires=.";
      after = unitList "After=.";
      before = unitList "Before=.";
      bindsTo = unitList "BindsTo=.";
      partOf = unitList "PartOf=.";
      unitConfig = mkOption { type = types.attrsOf unitOption; default = { }; description = "[Unit] settings."; };
      environment = mkOption {
        type = types.attrsOf (types.nullOr (types.oneOf [ types.str types.path types.package ]));
        default = { };
        description = "Environment variables passed to the service's processes.";
      };
      path = mkOption { type = types.listOf (types.oneOf [ types.package types.str ]); default = [ ]; description = "Packages on PATH."; };
      restartTriggers = mkOption { type = types.listOf types.unspecified; default = [ ]; description = "Restart when these change."; };
      serviceConfig = mkOption {
        type = types.addCheck (types.attrsOf unitOption) checkService;
        default = { };
        description = "[Service] settings.";
      };
    };
  };

  # nixos/lib/utils.nix (canonicalizePortList), as the firewall applies it.
  canonicalizePortList = ports: lib.unique (builtins.sort builtins.lessThan ports);

  nixosOptions = {
    options = {
      # nixos/modules/misc/assertions.nix
      assertions = mkOption { type = types.listOf types.unspecified; internal = true; default = [ ]; description = "Assertions."; };
      warnings = mkOption { type = types.listOf types.str; internal = true; default = [ ]; description = "Warnings."; };
      # nixos/modules/services/networking/firewall.nix
      networking.firewall.allowedTCPPorts = mkOption {
        type = types.listOf types.port;
        default = [ ];
        apply = canonicalizePortList;
        description = "TCP ports open in the firewall.";
      };
      # nixos/modules/system/boot/systemd.nix
      systemd.services = mkOption { type = types.attrsOf (types.submodule serviceOptions); default = { }; description = "systemd services."; };
    };
  };

  # --- pkgs: only what the module's `package` default needs. ---------------------------------------
  stubPackage = lib.fix (self: {
    type = "derivation";
    name = "unnar-0.0.0";
    pname = "unnar";
    outPath = "/nix/store/00000000000000000000000000000000-unnar-0.0.0";
    outputs = [ "out" ];
    out = self;
    outputName = "out";
    meta.mainProgram = "unnar";
  });
  pkgs = {
    callPackage = fn: args:
      assert lib.assertMsg (builtins.isPath fn && builtins.pathExists fn) "pkgs.callPackage: ${toString fn} does not exist";
      stubPackage;
  };

  # --- The evaluation. -----------------------------------------------------------------------------
  evalWith = file: definitions: modules: lib.evalModules {
    modules = [
      ../../nix/module.nix
      nixosOptions
      { _module.args.pkgs = pkgs; }
      { _file = file; config.services.unnar = definitions; }
    ] ++ modules;
  };

  # nixos/lib/systemd-lib.nix: commonUnitText and serviceToUnit (no globalEnvironment here).
  unitText = name: def:
    let
      unitConfig = def.unitConfig
        // lib.optionalAttrs (def.description != "") { Description = def.description; }
        // lib.optionalAttrs (def.documentation != [ ]) { Documentation = toString def.documentation; }
        // lib.optionalAttrs (def.wants != [ ]) { Wants = toString def.wants; }
        // lib.optionalAttrs (def.requires != [ ]) { Requires = toString def.requires; }
        // lib.optionalAttrs (def.after != [ ]) { After = toString def.after; }
        // lib.optionalAttrs (def.before != [ ]) { Before = toString def.before; }
        // lib.optionalAttrs (def.bindsTo != [ ]) { BindsTo = toString def.bindsTo; }
        // lib.optionalAttrs (def.partOf != [ ]) { PartOf = toString def.partOf; };
      env = def.environment;
    in
    "[Unit]\n${attrsToSection unitConfig}\n[Service]\n"
    + lib.concatMapStrings
      (n:
        let s = lib.optionalString (env.${n} != null) "Environment=${builtins.toJSON "${n}=${env.${n}}"}\n";
        in if builtins.stringLength s >= 1048576 then throw "The value of the environment variable ‘${n}’ in systemd service ‘${name}.service’ is too long." else s)
      (lib.attrNames env)
    + attrsToSection def.serviceConfig
    + lib.optionalString (def.wantedBy != [ ]) "\n[Install]\nWantedBy=${lib.concatStringsSep " " def.wantedBy}\n";

  # What a NixOS system makes of it; like its top-level, failed assertions abort and warnings are
  # printed (lib.asserts.checkAssertWarn).
  serviceOf = config:
    let
      services = config.systemd.services;
      unnar = services.unnar;
    in
    lib.asserts.checkAssertWarn config.assertions config.warnings ({
      services = lib.attrNames services;
      firewallPorts = config.networking.firewall.allowedTCPPorts;
      inherit (config) warnings;
    } // lib.optionalAttrs (services ? unnar) {
      inherit (unnar) environment serviceConfig wantedBy after description;
      unit = unitText "unnar" unnar;
    });

  inherit (evalWith "configJson" (builtins.fromJSON configJson) [ extraModule ]) config options;
in
{
  service = serviceOf config;

  cases = lib.imap0
    (i: definitions:
      let
        service = serviceOf (evalWith "casesJson[${toString i}]" definitions [ ]).config;
        result = builtins.tryEval (builtins.deepSeq service service);
      in
      { ok = result.success; environment = if result.success then result.value.environment or null else null; })
    (builtins.fromJSON casesJson);

  options = lib.mapAttrs
    (_: o: { type = o.type.description; default = o.default or null; })
    (lib.removeAttrs options.services.unnar [ "package" ])
    // { package = { type = options.services.unnar.package.type.description; default = null; }; };

  docs = map
    (o: { inherit (o) name description type; default = o.default or null; example = o.example or null; })
    (lib.filter (o: lib.hasPrefix "services.unnar." o.name) (lib.optionAttrSetToDocList options));
}
