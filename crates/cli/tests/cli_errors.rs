//! The `hearth` binary's refusals: a bad sampling flag is named, the same
//! rule the library and the server apply, before any model is loaded.

use std::process::Command;

fn hearth(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hearth")).args(args).output().expect("hearth runs");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_sampling_flags_are_named_before_loading() {
    for (flag, value, field) in [
        ("--min-p", "2", "min_p"),
        ("--top-p", "0", "top_p"),
        ("--temp", "-1", "temperature"),
        ("--repeat-penalty", "0", "repeat_penalty"),
        ("--frequency-penalty", "5", "frequency_penalty"),
    ] {
        let arg = format!("{flag}={value}");
        let (code, err) = hearth(&["run", "no-such-model", "hi", &arg]);
        assert_eq!(code, 1, "{arg}: {err}");
        assert!(err.contains(&format!("invalid {flag}")) && err.contains(field), "{arg}: {err}");
    }
    // A negative top-k is not a number of tokens at all.
    let (code, err) = hearth(&["run", "no-such-model", "hi", "--top-k=-1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--top-k"), "{err}");
}

#[test]
fn an_unknown_model_is_named() {
    let (code, err) = hearth(&["run", "no-such-model", "hi"]);
    assert_eq!(code, 1);
    assert!(err.contains("no-such-model") && err.contains("hearth list"), "{err}");
}
