//! A depth bound for recursive JSON schemas.
//!
//! A schema that refers to itself (a tree of nodes, a linked list) has no
//! longest output, and a sampled model — small ones above all — happily
//! nests until `max_tokens` cuts the JSON in half. Hearth unrolls each
//! recursive definition to [`RECURSION_DEPTH`] levels and forbids it below
//! that (the reference becomes `false`, so an optional branch such as
//! `anyOf: [node, null]` or an array of nodes must take its way out). Every
//! output is still valid under the original schema; only deeper documents
//! are excluded. Non-recursive references are left for llguidance.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

/// Levels a recursive definition may nest (a tree of depth 4 with two
/// children per node is already 31 nodes).
pub const RECURSION_DEPTH: usize = 4;

/// Most schema nodes unrolling may create; deeper bounds are tried lower
/// until the unrolled schema fits (k references per level grow as k^depth).
const MAX_UNROLLED_NODES: usize = 20_000;

/// `schema` with its recursive definitions unrolled to at most `depth`
/// levels (lower if the result would be too large). Unchanged when nothing
/// recurses.
#[must_use]
pub fn bound_recursion(schema: &Value, depth: usize) -> Value {
    let defs = definitions(schema);
    let recursive = recursive_definitions(&defs);
    if recursive.is_empty() {
        return schema.clone();
    }
    for depth in (0..=depth).rev() {
        let mut budget = MAX_UNROLLED_NODES;
        let mut path = HashMap::new();
        if let Some(out) = unroll(schema, &defs, &recursive, depth, &mut path, &mut budget, true) {
            return out;
        }
    }
    schema.clone()
}

/// The definitions a `$ref` can name: `#/$defs/x`, `#/definitions/x`, and
/// `#` (the root itself).
fn definitions(schema: &Value) -> HashMap<String, Value> {
    let mut defs = HashMap::new();
    for key in ["$defs", "definitions"] {
        if let Some(Value::Object(m)) = schema.get(key) {
            for (name, body) in m {
                defs.insert(format!("#/{key}/{name}"), body.clone());
            }
        }
    }
    if let Value::Object(root) = schema {
        let body: Map<String, Value> =
            root.iter().filter(|(k, _)| *k != "$defs" && *k != "definitions").map(|(k, v)| (k.clone(), v.clone())).collect();
        defs.insert("#".to_owned(), Value::Object(body));
    }
    defs
}

/// Every `$ref` target inside `v`.
fn refs_in(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r.clone());
            }
            for (k, child) in m {
                if k != "$defs" && k != "definitions" {
                    refs_in(child, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|c| refs_in(c, out)),
        _ => {}
    }
}

/// The definitions that can reach themselves through references.
fn recursive_definitions(defs: &HashMap<String, Value>) -> HashSet<String> {
    let edges: HashMap<&str, Vec<String>> = defs
        .iter()
        .map(|(name, body)| {
            let mut out = Vec::new();
            refs_in(body, &mut out);
            (name.as_str(), out)
        })
        .collect();
    let reaches_itself = |start: &str| {
        let mut seen = HashSet::new();
        let mut stack: Vec<&str> = edges.get(start).map(|e| e.iter().map(String::as_str).collect()).unwrap_or_default();
        while let Some(n) = stack.pop() {
            if n == start {
                return true;
            }
            if seen.insert(n) {
                stack.extend(edges.get(n).into_iter().flatten().map(String::as_str));
            }
        }
        false
    };
    defs.keys().filter(|name| reaches_itself(name)).cloned().collect()
}

/// Copies `v`, inlining references to recursive definitions while each is
/// open fewer than `depth` times on the current path, and `false` beyond.
/// `None` when the copy would exceed the node budget.
fn unroll(
    v: &Value,
    defs: &HashMap<String, Value>,
    recursive: &HashSet<String>,
    depth: usize,
    path: &mut HashMap<String, usize>,
    budget: &mut usize,
    root: bool,
) -> Option<Value> {
    *budget = budget.checked_sub(1)?;
    match v {
        Value::Object(m) => {
            if let Some(Value::String(target)) = m.get("$ref") {
                if recursive.contains(target) && !root {
                    let open = path.get(target).copied().unwrap_or(0);
                    if open >= depth {
                        return Some(Value::Bool(false));
                    }
                    let inlined = inline(target, defs, recursive, depth, path, budget)?;
                    let rest: Map<String, Value> = m.iter().filter(|(k, _)| *k != "$ref").map(|(k, v)| (k.clone(), v.clone())).collect();
                    return Some(if rest.is_empty() {
                        inlined
                    } else {
                        let rest = unroll(&Value::Object(rest), defs, recursive, depth, path, budget, false)?;
                        serde_json::json!({"allOf": [rest, inlined]})
                    });
                }
            }
            let mut out = Map::new();
            for (k, child) in m {
                let child = if k == "$defs" || k == "definitions" {
                    child.clone() // kept for the references left in place
                } else {
                    unroll(child, defs, recursive, depth, path, budget, false)?
                };
                out.insert(k.clone(), child);
            }
            // The root's own `$ref` to a recursive definition opens it once.
            if root {
                if let Some(Value::String(target)) = m.get("$ref") {
                    if recursive.contains(target) {
                        out.remove("$ref");
                        let inlined = inline(target, defs, recursive, depth, path, budget)?;
                        return Some(if out.keys().all(|k| k == "$defs" || k == "definitions") {
                            merge_defs(inlined, &out)
                        } else {
                            let defs_only: Map<String, Value> = out.iter().filter(|(k, _)| *k == "$defs" || *k == "definitions").map(|(k, v)| (k.clone(), v.clone())).collect();
                            let rest: Map<String, Value> = out.into_iter().filter(|(k, _)| k != "$defs" && k != "definitions").collect();
                            let mut all = Map::new();
                            all.insert("allOf".into(), Value::Array(vec![Value::Object(rest), inlined]));
                            all.extend(defs_only);
                            Value::Object(all)
                        });
                    }
                }
            }
            Some(Value::Object(out))
        }
        Value::Array(a) => a.iter().map(|c| unroll(c, defs, recursive, depth, path, budget, false)).collect::<Option<Vec<_>>>().map(Value::Array),
        other => Some(other.clone()),
    }
}

/// The body of recursive definition `target`, unrolled with it open once
/// more on the current path (and closed again after).
fn inline(
    target: &str,
    defs: &HashMap<String, Value>,
    recursive: &HashSet<String>,
    depth: usize,
    path: &mut HashMap<String, usize>,
    budget: &mut usize,
) -> Option<Value> {
    let body = defs.get(target)?; // `recursive` holds only names of `defs`
    let open = path.get(target).copied().unwrap_or(0);
    path.insert(target.to_owned(), open + 1);
    let inlined = unroll(body, defs, recursive, depth, path, budget, false);
    path.insert(target.to_owned(), open);
    inlined
}

/// `inlined` with the root's definitions attached (for references left in place).
fn merge_defs(inlined: Value, root: &Map<String, Value>) -> Value {
    match inlined {
        Value::Object(mut m) => {
            for (k, v) in root {
                m.entry(k.clone()).or_insert_with(|| v.clone());
            }
            Value::Object(m)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::bound_recursion;

    fn depth_of(v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::Object(m) => 1 + m.values().map(depth_of).max().unwrap_or(0),
            serde_json::Value::Array(a) => a.iter().map(depth_of).max().unwrap_or(0),
            _ => 0,
        }
    }

    #[test]
    fn non_recursive_schemas_are_unchanged() {
        let s = json!({"$defs": {"p": {"type": "integer"}}, "type": "object", "properties": {"a": {"$ref": "#/$defs/p"}}});
        assert_eq!(bound_recursion(&s, 4), s);
    }

    #[test]
    fn a_linked_list_is_unrolled_and_ends_in_false() {
        let s = json!({"$defs": {"cell": {"type": "object", "properties": {"tail": {"anyOf": [{"$ref": "#/$defs/cell"}, {"type": "null"}]}}}}, "$ref": "#/$defs/cell"});
        let mut out = bound_recursion(&s, 2);
        out.as_object_mut().expect("object").remove("$defs"); // kept for references left in place
        let text = out.to_string();
        assert!(!text.contains("\"$ref\""), "{text}");
        assert!(text.contains("false"), "{text}");
        assert!(depth_of(&out) < 20);
    }

    #[test]
    fn self_reference_through_the_root_is_bounded() {
        let s = json!({"type": "object", "properties": {"child": {"$ref": "#"}}});
        let out = bound_recursion(&s, 3);
        assert!(!out.to_string().contains("\"$ref\""), "{out}");
    }
}
