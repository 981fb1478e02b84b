//! Checks a request the git host received against the host's official API description
//! (`tests/specs/…`, read at test time): the operation exists for that method and path
//! template, its required query parameters are there, and the JSON body has the required
//! fields with the right JSON types and no field the description does not define.
//!
//! Reads Swagger 2.0 (Azure DevOps) and OpenAPI 3.0 (GitLab, as YAML) alike; only what those
//! files use is supported (`$ref` to local definitions, `type`, `items`, `properties`,
//! `required`, `nullable`).

use std::path::PathBuf;

use serde_json::Value;

use super::Recorded;

/// `tests/specs/{relative}`: the hosts' official API descriptions, kept in the repository
/// (tests/specs/SOURCES.md says where each came from) so a clone anywhere can run the tests.
pub fn spec_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/specs")
        .join(relative)
}

/// A description as JSON, whether the file is JSON or YAML.
pub fn load(relative: &str) -> Value {
    let path = spec_path(relative);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read the API description {}: {e}", path.display()));
    if relative.ends_with(".json") {
        serde_json::from_str(&text).unwrap()
    } else {
        serde_yaml_ng::from_str(&text).unwrap()
    }
}

/// Follows a local `$ref` (`#/definitions/X`, `#/components/schemas/X`, `#/parameters/X`).
fn resolve<'a>(spec: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').expect("only local references");
            let target = spec
                .pointer(pointer)
                .unwrap_or_else(|| panic!("dangling $ref {reference}"));
            resolve(spec, target)
        }
        None => value,
    }
}

/// Whether a raw path matches a template: `{x}` is one non-empty raw segment. With
/// `greedy_last`, a parameter at the very end takes the rest of the path (GitHub's `{ref}`
/// is `heads/feature/x`); that is tried only when no template matches segment for segment.
fn matches_template(template: &str, path: &str, greedy_last: bool) -> bool {
    let t: Vec<&str> = template.trim_start_matches('/').split('/').collect();
    let mut p: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let last_is_param = t
        .last()
        .is_some_and(|s| s.starts_with('{') && s.ends_with('}'));
    if greedy_last
        && last_is_param
        && p.len() > t.len()
        && p[t.len() - 1..].iter().all(|s| !s.is_empty())
    {
        p.truncate(t.len());
    }
    t.len() == p.len()
        && t.iter().zip(&p).all(|(t, p)| {
            if t.starts_with('{') && t.ends_with('}') {
                !p.is_empty()
            } else {
                t == p
            }
        })
}

/// Checks `request` against `spec` and returns the operation's id.
pub fn check(spec: &Value, request: &Recorded) -> Result<String, String> {
    let (path, query) = request
        .path_and_query
        .split_once('?')
        .unwrap_or((&request.path_and_query, ""));
    let method = request.method.as_str().to_ascii_lowercase();
    let paths = spec["paths"]
        .as_object()
        .ok_or("the description has no paths")?;
    let find = |greedy_last: bool| {
        paths
            .iter()
            .filter(|(template, _)| matches_template(template, path, greedy_last))
            .find_map(|(template, item)| item.get(&method).map(|op| (template, op)))
    };
    let (template, operation) = find(false)
        .or_else(|| find(true))
        .ok_or_else(|| format!("no operation for {} {path}", request.method))?;
    let id = operation["operationId"].as_str().unwrap_or("?").to_string();
    let at = |why: String| format!("{id} ({} {template}): {why}", request.method);

    let query_names: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split('=').next().unwrap_or("").to_string())
        .collect();
    let mut body_schema = None;
    for parameter in operation["parameters"].as_array().into_iter().flatten() {
        let parameter = resolve(spec, parameter);
        let required = parameter["required"].as_bool().unwrap_or(false);
        let name = parameter["name"].as_str().unwrap_or("");
        match parameter["in"].as_str() {
            Some("query") if required && !query_names.iter().any(|n| n == name) => {
                return Err(at(format!(
                    "the required query parameter `{name}` is missing"
                )))
            }
            Some("body") => body_schema = Some(&parameter["schema"]),
            _ => {}
        }
    }
    if let Some(body) = operation.get("requestBody") {
        let body = resolve(spec, body);
        body_schema = Some(&body["content"]["application/json"]["schema"]);
        if body["required"].as_bool() == Some(true) && request.body.is_empty() {
            return Err(at("the request body is required".into()));
        }
    }
    match body_schema {
        Some(schema) => {
            let content_type = request
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !content_type.starts_with("application/json") {
                return Err(at(format!(
                    "the body is sent as `{content_type}`, not JSON"
                )));
            }
            let body: Value = serde_json::from_slice(&request.body)
                .map_err(|e| at(format!("the body is not JSON: {e}")))?;
            check_value(spec, resolve(spec, schema), &body, "body").map_err(at)?;
        }
        None if !request.body.is_empty() => {
            return Err(at("the operation takes no body, but one was sent".into()))
        }
        None => {}
    }
    Ok(id)
}

fn check_value(spec: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if value.is_null() && schema["nullable"].as_bool() == Some(true) {
        return Ok(());
    }
    let expected = schema["type"].as_str();
    let ok = match (expected, value) {
        (None, _) => true,
        (Some("string"), Value::String(_)) => true,
        (Some("integer"), Value::Number(n)) => n.is_i64() || n.is_u64(),
        (Some("number"), Value::Number(_)) => true,
        (Some("boolean"), Value::Bool(_)) => true,
        (Some("array"), Value::Array(_)) => true,
        (Some("object"), Value::Object(_)) => true,
        _ => false,
    };
    if !ok {
        return Err(format!(
            "{at} is {value}, not of type {}",
            expected.unwrap_or("?")
        ));
    }
    match value {
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check_value(
                        spec,
                        resolve(spec, item_schema),
                        item,
                        &format!("{at}[{i}]"),
                    )?;
                }
            }
        }
        Value::Object(map) => {
            for required in schema["required"].as_array().into_iter().flatten() {
                let name = required.as_str().unwrap_or("");
                if !map.contains_key(name) {
                    return Err(format!("{at} lacks the required field `{name}`"));
                }
            }
            if let Some(properties) = schema["properties"].as_object() {
                for (name, field) in map {
                    let field_schema = properties
                        .get(name)
                        .ok_or_else(|| format!("{at}.{name} is not defined by the description"))?;
                    check_value(
                        spec,
                        resolve(spec, field_schema),
                        field,
                        &format!("{at}.{name}"),
                    )?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}
