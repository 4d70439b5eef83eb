//! The Akash SDL example stays safe to copy and stays validated: ACT pricing, a bearer token
//! whenever gpulse's port is public, and `.ci/run` running Akash's own validator on it
//! (`.ci/akash-sdl.sh`; the validator itself needs node and npm, so it runs there, not here).

use crate::tidy::root;

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap()
}

#[test]
fn sdl_prices_in_act_and_guards_the_public_port() {
    let sdl = read("packaging/akash/deploy.yaml");
    let denoms: Vec<&str> = sdl
        .lines()
        .filter_map(|l| l.trim().strip_prefix("denom:"))
        .map(str::trim)
        .collect();
    assert_eq!(denoms, ["uact"], "deploy.yaml must price in uact only");
    assert!(
        sdl.contains("        as: 9412\n"),
        "deploy.yaml no longer exposes 9412: update this test and packaging/akash/README.md"
    );
    assert!(
        sdl.contains("- GPULSE_HTTP_BEARER_TOKEN_ENV=GPULSE_TOKEN\n"),
        "9412 is exposed globally: deploy.yaml must set the bearer token from the environment"
    );
}

#[test]
fn ci_runs_akashs_validator_on_the_sdl() {
    let ci = read(".ci/run");
    assert!(
        ci.contains("\nstep akash-sdl .ci/akash-sdl.sh\n"),
        ".ci/run lost the akash-sdl step"
    );
    let script = read(".ci/akash-sdl.sh");
    assert!(script.contains("@akashnetwork/chain-sdk@$VERSION"));
    assert!(script.contains("packaging/akash/deploy.yaml"));
    let check = read(".ci/akash-sdl.mjs");
    assert!(check.contains("validateSDL(sdl, NETWORK)"));
    assert!(
        check.contains("expected a rejection"),
        "the negative cases are gone"
    );
}
