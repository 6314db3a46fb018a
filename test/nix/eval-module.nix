# Evaluates nix/module.nix WITHOUT nixpkgs (which these machines cannot fetch), for
# test/nix-packaging.test.ts:
#   nix-instantiate --eval --strict --json test/nix/eval-module.nix --argstr configJson '{...}'
# A stand-in supplies the few nixpkgs `lib` functions the module uses, with the same meaning; option
# types are reduced to their checks, and every given or default value is checked against its type.
# This is not the NixOS module system (no merging, priorities or docs): it checks the module's own
# logic (options from nix/settings.nix, the environment, credentials, systemd settings, assertions).
{ configJson ? "{}" }:
let
  inherit (builtins) all attrNames attrValues elem filter isAttrs isFloat isInt isList isString
    listToAttrs mapAttrs match substring stringLength toJSON;

  userConfig = builtins.fromJSON configJson;

  mkType = name: check: { inherit name check; };
  types = {
    str = mkType "str" isString;
    bool = mkType "bool" builtins.isBool;
    port = mkType "port" (x: isInt x && x >= 0 && x <= 65535);
    package = mkType "package" isAttrs;
    strMatching = re: mkType "string matching ${re}" (x: isString x && match re x != null);
    ints.positive = mkType "positive integer" (x: isInt x && x > 0);
    ints.unsigned = mkType "unsigned integer" (x: isInt x && x >= 0);
    numbers.nonnegative = mkType "non-negative number" (x: (isInt x || isFloat x) && x >= 0);
    either = a: b: mkType "${a.name} or ${b.name}" (x: a.check x || b.check x);
    enum = values: mkType "one of ${toJSON values}" (x: elem x values);
    listOf = t: mkType "list of ${t.name}" (x: isList x && all t.check x);
    attrsOf = t: mkType "attribute set of ${t.name}" (x: isAttrs x && all t.check (attrValues x));
    nullOr = t: mkType "null or ${t.name}" (x: x == null || t.check x);
  };

  hasPrefix = prefix: s: substring 0 (stringLength prefix) s == prefix;

  lib = {
    inherit types hasPrefix;
    inherit (builtins) any attrNames concatStringsSep elem mapAttrs;
    mkOption = attrs: attrs // { _type = "option"; };
    mkEnableOption = what: { _type = "option"; type = types.bool; default = false; description = "Whether to enable ${what}."; };
    literalMD = text: { _type = "literalMD"; inherit text; };
    mkIf = condition: content: { _type = "if"; inherit condition content; };
    optional = cond: x: if cond then [ x ] else [ ];
    optionalAttrs = cond: set: if cond then set else { };
    filterAttrs = pred: set: listToAttrs (map (name: { inherit name; value = set.${name}; }) (filter (name: pred name set.${name}) (attrNames set)));
    toInt = s: builtins.fromJSON s;
    removePrefix = prefix: s: if hasPrefix prefix s then substring (stringLength prefix) (-1) s else s;
    intersectLists = e: filter (x: elem x e);
    getExe = pkg: "${pkg}/bin/${pkg.meta.mainProgram}";
  };

  pkgs.callPackage = _: _: { outPath = "/nix/store/00000000000000000000000000000000-unnar"; meta.mainProgram = "unnar"; };

  evaluated = import ../../nix/module.nix { inherit lib pkgs; config.services.unnar = cfg; };
  options = evaluated.options.services.unnar;

  cfg = mapAttrs
    (name: option:
      let value = userConfig.${name} or option.default;
      in if option.type.check value then value
      else throw "services.unnar.${name}: ${toJSON value} is not a ${option.type.name}")
    options;

  unknown = filter (name: !(options ? ${name})) (attrNames userConfig);
  whenEnabled = x: if x.condition then x.content else null;
  config = whenEnabled evaluated.config;
  service = config.systemd.services.unnar;
in
if unknown != [ ] then throw "unknown options: ${toJSON unknown}" else
{
  options = mapAttrs (_: o: { type = o.type.name; default = o.default; }) options;
  inherit (service) environment serviceConfig wantedBy after;
  assertions = map (a: { inherit (a) assertion message; }) config.assertions;
  inherit (config) warnings;
  firewallPorts = let ports = whenEnabled config.networking.firewall.allowedTCPPorts; in if ports == null then [ ] else ports;
}
