// Validates packaging/akash/deploy.yaml with Akash's own SDL validator (validateSDL from
// @akashnetwork/chain-sdk, the code Akash Console runs), then checks that broken copies are
// rejected, so a validator that accepts everything cannot pass. Run by .ci/akash-sdl.sh:
//   node .ci/akash-sdl.mjs SDK_PREFIX SDL_FILE
import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";

const [prefix, file] = process.argv.slice(2);
if (!prefix || !file) {
  console.error("usage: node .ci/akash-sdl.mjs SDK_PREFIX SDL_FILE");
  process.exit(2);
}
const require = createRequire(path.resolve(prefix) + "/");
const { validateSDL } = require("@akashnetwork/chain-sdk");
const yaml = require("js-yaml");
const NETWORK = "mainnet";

// Akash's validator alone.
function akashErrors(sdl) {
  return (validateSDL(sdl, NETWORK) ?? []).map((e) => `${e.instancePath || "/"}: ${e.message}`);
}

// Akash's validator, plus what this project requires of its example: ACT pricing, and a
// bearer token whenever gpulse's port is exposed globally.
function problems(sdl) {
  const errors = akashErrors(sdl);
  for (const [placement, p] of Object.entries(sdl?.profiles?.placement ?? {})) {
    for (const [svc, price] of Object.entries(p?.pricing ?? {})) {
      if (price?.denom !== "uact") {
        errors.push(`placement ${placement}, ${svc}: denom ${price?.denom}, not uact (ACT pricing)`);
      }
    }
  }
  for (const [name, svc] of Object.entries(sdl?.services ?? {})) {
    const open = (svc?.expose ?? []).some(
      (e) => e.port === 9412 && (e.to ?? []).some((t) => t.global === true),
    );
    const env = svc?.env ?? [];
    if (open && !env.some((v) => /^GPULSE_HTTP_BEARER_TOKEN_(ENV|FILE)=./.test(v))) {
      errors.push(`service ${name}: 9412 is exposed globally without a bearer token`);
    }
  }
  return errors;
}

const shipped = yaml.load(fs.readFileSync(file, "utf8"));
const found = problems(shipped);
if (found.length) {
  console.error(`${file}: rejected:\n  ${found.join("\n  ")}`);
  process.exit(1);
}
console.log(`${file}: valid (validateSDL, ${NETWORK})`);

// Broken copies: each must be rejected; those marked "akash" by Akash's validator itself.
const svc = Object.keys(shipped.services)[0];
const placement = Object.keys(shipped.profiles.placement)[0];
const broken = [
  ["akash", "denom that is no Akash denom", (s) => {
    s.profiles.placement[placement].pricing[svc].denom = "usd";
  }],
  ["akash", "deployment naming a missing profile", (s) => {
    s.deployment[svc][placement].profile = "no-such-profile";
  }],
  ["akash", "GPU without a vendor", (s) => {
    delete s.profiles.compute[svc].resources.gpu.attributes;
  }],
  ["gpulse", "legacy uakt pricing", (s) => {
    s.profiles.placement[placement].pricing[svc].denom = "uakt";
  }],
  ["gpulse", "9412 public without a token", (s) => {
    s.services[svc].env = s.services[svc].env.filter((v) => !v.startsWith("GPULSE_HTTP_BEARER"));
  }],
];
let failed = 0;
for (const [by, what, mutate] of broken) {
  const copy = structuredClone(shipped);
  mutate(copy);
  const errs = by === "akash" ? akashErrors(copy) : problems(copy);
  if (errs.length) {
    console.log(`broken copy (${what}): rejected by ${by}: ${errs[0]}`);
  } else {
    console.error(`broken copy (${what}): ACCEPTED, expected a rejection`);
    failed = 1;
  }
}
process.exit(failed);
