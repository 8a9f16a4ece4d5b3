//! Interactive chat at the terminal, with line editing and history.

use std::io::Write;

use anyhow::Result;
use hearth_engine::batching::EngineConfig;
use hearth_engine::LoadedModel;
use hearth_sampling::SamplingParams;
use hearth_text::Message;

/// Runs a chat until `/bye` or end of input.
pub fn interactive(
    session: &LoadedModel,
    params: &SamplingParams,
    config: &EngineConfig,
    system: Option<&str>,
    adapter: Option<&(std::sync::Arc<hearth_engine::LoraAdapter>, f32)>,
) -> Result<()> {
    let mut editor = rustyline::DefaultEditor::new()?;
    let mut history: Vec<Message> = system.map(|s| vec![Message::new("system", s)]).unwrap_or_default();
    eprintln!("chatting with {} — /bye to quit, /clear to forget", session.model.config().arch);
    loop {
        let line = match editor.readline(">>> ") {
            Ok(l) => l,
            Err(rustyline::error::ReadlineError::Interrupted | rustyline::error::ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        let line = line.trim();
        match line {
            "" => continue,
            "/bye" => break,
            "/clear" => {
                history.retain(|m| m.role == "system");
                continue;
            }
            _ => {}
        }
        let _ = editor.add_history_entry(line);
        history.push(Message::new("user", line));
        let tokens = session.chat_prompt(&history)?;
        let mut stdout = std::io::stdout().lock();
        let request = hearth_engine::batching::GenRequest {
            adapter: adapter.cloned(),
            ..hearth_engine::batching::GenRequest::new(tokens, params.clone())
        };
        let out = session.generate_request(request, config, |piece| {
            let _ = stdout.write_all(piece.as_bytes());
            let _ = stdout.flush();
        })?;
        writeln!(stdout)?;
        history.push(Message::new("assistant", &out.text));
    }
    Ok(())
}
