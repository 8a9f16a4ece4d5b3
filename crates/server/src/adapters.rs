//! LoRA adapters over HTTP: a request picks one by model name
//! (`"model": "smollm2:legal"`) or by its `lora` field (a name, `{"name",
//! "scale"}`, or llama-server's `[{"id", "scale"}]`); `GET /v1/adapters`
//! lists them and `POST /v1/adapters` loads one into a running model from
//! the server's adapter folder (`--lora-dir`: never a path a client
//! chooses beyond a file name in that folder).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hearth_engine::{LoadedModel, LoraAdapter};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::{parse, AppState, Served};

/// An adapter chosen for a request, and its scale.
pub(crate) type Chosen = (Arc<LoraAdapter>, f32);

impl AppState {
    /// `BASE:ADAPTER` apart, when BASE names a served model that has
    /// adapters (and the whole name is not a model's): the model's index and
    /// the adapter's name. A model without adapters keeps treating
    /// `BASE:TAG` as any other name (the default model may answer it).
    pub(crate) fn adapter_of_name<'a>(&self, asked: &'a str) -> Option<(usize, &'a str)> {
        let (base, adapter) = asked.rsplit_once(':')?;
        if adapter.is_empty() || self.find(asked).is_some() {
            return None;
        }
        let index = self.find(base)?;
        let has_adapters = !self.models.specs()[index].adapter_list().is_empty();
        has_adapters.then_some((index, adapter))
    }
}

/// The adapter `name` of `session`, or a 404 listing those it has.
pub(crate) fn adapter_named(session: &LoadedModel, model: &str, name: &str, param: &str) -> Result<Arc<LoraAdapter>, ApiError> {
    session.adapter(name).ok_or_else(|| {
        let have: Vec<String> = session.adapters().into_iter().map(|(n, _)| n).collect();
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: Some("adapter_not_found"),
            ..ApiError::invalid(
                param,
                format!(
                    "model {model:?} has no adapter {name:?} (loaded: {})",
                    if have.is_empty() { "none".to_owned() } else { have.join(", ") }
                ),
            )
        }
    })
}

impl Served {
    /// The same, with the adapter a request's `lora` field asks for (it
    /// wins over one named in `model`): a name, `{"name", "scale"}`, or
    /// llama-server's list `[{"id", "scale"}]` (ids in load order; at most
    /// one with a scale other than 0).
    pub(crate) fn with_lora(mut self, field: Option<&Value>) -> Result<Self, ApiError> {
        let Some(field) = field.filter(|v| !v.is_null()) else { return Ok(self) };
        let bad = |why: &str| ApiError::invalid("lora", format!("lora: {why}"));
        let session = Arc::clone(self.engine.session());
        let named = |name: &str| adapter_named(&session, &self.model_name, name, "lora");
        let chosen: Option<Chosen> = match field {
            Value::String(name) => Some((named(name)?, 1.0)),
            Value::Object(o) => {
                let name = o.get("name").and_then(Value::as_str).ok_or_else(|| bad("give {\"name\": ADAPTER, \"scale\": S}"))?;
                Some((named(name)?, scale_of(o.get("scale"))?))
            }
            Value::Array(items) => {
                let all = session.adapters();
                let mut on = Vec::new();
                for item in items {
                    let id = item.get("id").and_then(Value::as_u64).ok_or_else(|| bad("each entry needs an \"id\""))?;
                    let (_, adapter) = usize::try_from(id)
                        .ok()
                        .and_then(|i| all.get(i))
                        .ok_or_else(|| bad(&format!("no adapter with id {id} ({} loaded)", all.len())))?;
                    let scale = scale_of(item.get("scale"))?;
                    if scale != 0.0 {
                        on.push((Arc::clone(adapter), scale));
                    }
                }
                if on.len() > 1 {
                    return Err(bad("one adapter per request (give the others scale 0)"));
                }
                on.pop()
            }
            _ => return Err(bad("give an adapter's name, {\"name\", \"scale\"}, or [{\"id\", \"scale\"}]")),
        };
        self.adapter = chosen;
        Ok(self)
    }
}

/// A scale: a finite number (default 1).
fn scale_of(v: Option<&Value>) -> Result<f32, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(1.0),
        Some(v) => v
            .as_f64()
            .map(|s| s as f32)
            .filter(|s| s.is_finite() && s.abs() <= 100.0)
            .ok_or_else(|| ApiError::invalid("lora", "an adapter's scale is a number between -100 and 100")),
    }
}

/// `GET /v1/adapters`: every model's adapters (those of unloaded models as
/// configured; loaded ones with their size).
pub async fn list(State(app): State<Arc<AppState>>) -> Json<Value> {
    let registry = &app.models;
    let mut data = Vec::new();
    for (i, spec) in registry.specs().iter().enumerate() {
        let loaded = registry.loaded(i);
        for (id, (name, path)) in spec.adapter_list().iter().enumerate() {
            let live = loaded.as_ref().and_then(|e| e.session().adapter(name));
            data.push(json!({
                "id": id,
                "model": spec.name,
                "name": name,
                "path": path.file_name().map(|f| f.to_string_lossy().into_owned()),
                "loaded": live.is_some(),
                "matrices": live.as_ref().map(|a| a.matrices()),
                "bytes": live.as_ref().map(|a| a.bytes()),
                "alpha": live.as_ref().map(|a| a.alpha),
            }));
        }
    }
    Json(json!({"object": "list", "data": data}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadRequest {
    /// The served model it belongs to (default: the default model).
    #[serde(default)]
    model: String,
    /// The name requests will use.
    name: String,
    /// Its file, in the server's adapter folder.
    file: String,
}

/// `POST /v1/adapters`: loads `{"model", "name", "file"}` (a file in the
/// adapter folder) into the model now, and with it on later loads.
pub async fn load(State(app): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    let req: LoadRequest = parse(&body)?;
    let Some(dir) = &app.lora_dir else {
        return Err(ApiError {
            status: StatusCode::FORBIDDEN,
            code: Some("adapters_disabled"),
            ..ApiError::invalid("file", "loading adapters at run time is off: start the server with --lora-dir DIR")
        });
    };
    let plain = std::path::Path::new(&req.file)
        .file_name()
        .is_some_and(|f| f == std::ffi::OsStr::new(&req.file) && !req.file.starts_with('.'));
    if !plain {
        return Err(ApiError::invalid("file", "give a file name in the adapter folder, not a path"));
    }
    let model = if req.model.is_empty() { app.model_name().to_owned() } else { req.model.clone() };
    let index = app.find(&model).ok_or_else(|| ApiError::unknown_model(&model, &app.served_names()))?;
    let served = app.served(&app.models.specs()[index].name).await?;
    let path = dir.join(&req.file);
    let adapter = tokio::task::spawn_blocking({
        let app = Arc::clone(&app);
        let name = req.name.clone();
        move || app.models.add_adapter(index, served.lease(), &name, &path)
    })
    .await
    .map_err(|_| ApiError::internal("loading the adapter failed"))?
    .map_err(|e| ApiError::invalid("file", e.to_string()))?;
    tracing::info!("model {model:?}: adapter {:?} loaded ({} matrices)", req.name, adapter.matrices());
    Ok((
        StatusCode::CREATED,
        Json(json!({"model": model, "name": req.name, "matrices": adapter.matrices(), "bytes": adapter.bytes(), "alpha": adapter.alpha})),
    )
        .into_response())
}
