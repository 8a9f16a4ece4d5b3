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

/// `hearth show` names what this build cannot run, from the metadata and
/// the tensor table alone, and exits non-zero.
#[test]
fn show_names_unsupported_architecture_types_and_tokenizer() {
    use hearth_core::GgmlType;
    use hearth_gguf::{GgufWriter, MetaValue};
    let dir = std::env::temp_dir().join(format!("hearth-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("strange.gguf");
    let mut w = GgufWriter::new();
    w.set("general.architecture", MetaValue::String("mamba".into()));
    w.set("tokenizer.ggml.model", MetaValue::String("bert".into()));
    let iq2_bytes = GgmlType::IQ2_XXS.row_bytes(256).unwrap();
    w.add_tensor("blk.0.ssm_in.weight", &[256, 2], GgmlType::IQ2_XXS, vec![0; 2 * iq2_bytes]);
    w.add_tensor("output_norm.weight", &[256], GgmlType::F32, vec![0; 256 * 4]);
    w.write_to(&path).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hearth")).arg("show").arg(&path).output().expect("hearth runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    for needle in ["architecture \"mamba\"", "IQ2_XXS (×1)", "tokenizer model \"bert\""] {
        assert!(stdout.contains(needle) && stderr.contains(needle), "{needle}:\n{stdout}\n{stderr}");
    }
    assert!(!stdout.contains("F32 (×"), "F32 is supported: {stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A chat template that cannot render is refused when the model loads,
/// naming the problem, not at the first request.
#[test]
fn a_broken_chat_template_file_is_refused_at_start() {
    let model = hearth_testutil::real_model("smollm2");
    let dir = std::env::temp_dir().join(format!("hearth-cli-template-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.j2");
    std::fs::write(&bad, "{% for m in messages %}{{ m.content | nosuchfilter }}{% endfor %}").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["run"])
        .arg(&model)
        .arg("hi")
        .arg("--chat-template-file")
        .arg(&bad)
        .output()
        .expect("hearth runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("chat template") && stderr.contains("nosuchfilter"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An embedding model's folder given where a GGUF chat model belongs is
/// refused with where it does belong; `hearth embed` prints its vectors,
/// and a constraint flag shapes `hearth run`'s reply.
#[test]
fn embedding_folders_and_constraints_on_the_command_line() {
    let dir = hearth_testutil::real_model("minilm");
    let folder = dir.to_str().expect("utf-8 path");
    let (code, err) = hearth(&["show", folder]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("embedding model") && err.contains("hearth embed"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_hearth")).args(["embed", folder, "a cat", "a dog"]).output().expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Vec<f64>> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("a JSON vector")).collect();
    assert_eq!((lines.len(), lines[0].len()), (2, 384));
    let model = hearth_testutil::real_model("smollm2");
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["run", model.to_str().unwrap(), "Is water wet?", "--regex", "(yes|no)", "--temp", "0"])
        .output()
        .expect("runs");
    let reply = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && matches!(reply.trim(), "yes" | "no"), "{reply}");
    let (code, err) = hearth(&["run", model.to_str().unwrap(), "hi", "--json", "--stop", "x"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--stop"), "{err}");
}

/// `hearth pull FILE --as name:tag` names a local file; `show`, `cp`, `rm`
/// and `list` take the name, as Ollama's commands do.
#[test]
fn a_local_file_pulled_under_a_name_answers_to_it() {
    use hearth_gguf::{GgufWriter, MetaValue};
    let dir = std::env::temp_dir().join(format!("hearth-cli-names-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("strange.gguf");
    let mut w = GgufWriter::new();
    w.set("general.architecture", MetaValue::String("mamba".into()));
    w.write_to(&path).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_hearth")).args(args).env("HEARTH_MODELS", dir.join("cache")).output().expect("runs");
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    };
    let (code, out) = run(&["pull", path.to_str().unwrap(), "--as", "odd:v1"]);
    assert_eq!(code, Some(0), "{out}");
    let (_, out) = run(&["show", "odd:v1"]);
    assert!(out.contains("architecture \"mamba\""), "{out}");
    assert_eq!(run(&["cp", "odd:v1", "odd"]).0, Some(0));
    let (_, listed) = run(&["list"]);
    assert!(listed.contains("odd:latest") && listed.contains("odd:v1"), "{listed}");
    assert_eq!(run(&["rm", "odd:v1"]).0, Some(0));
    assert_eq!(run(&["rm", "odd"]).0, Some(0));
    let (code, out) = run(&["show", "odd"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("odd") && out.contains("hearth list"), "{out}");
    let (code, out) = run(&["pull", path.to_str().unwrap(), "--as", "smollm2"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("built-in"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
