//! `X_file = "/path"` in a config table means `X = <the file's contents>`: how secrets arrive
//! from systemd credentials (`${CREDENTIALS_DIRECTORY}/name`) or any secret store that writes
//! files, without the secret ever being in the config file. Nested tables are resolved too
//! (e.g. `receipts = { secret_file = ... }`).

use serde_json::{Map, Value};

/// Replaces every `X_file` key of `table` (and of the tables inside it) with `X` holding the
/// file's contents (one trailing newline removed). Errors name the key.
pub(crate) fn resolve(table: &mut Map<String, Value>) -> Result<(), String> {
    resolve_under(table, "")
}

fn resolve_under(table: &mut Map<String, Value>, prefix: &str) -> Result<(), String> {
    let file_keys: Vec<String> = table
        .keys()
        .filter(|k| k.ends_with("_file") && k.len() > "_file".len())
        .cloned()
        .collect();
    for key in file_keys {
        let base = key.trim_end_matches("_file").to_owned();
        let (shown_key, shown_base) = (format!("{prefix}{key}"), format!("{prefix}{base}"));
        if table.contains_key(&base) {
            return Err(format!(
                "give either `{shown_base}` or `{shown_key}`, not both"
            ));
        }
        let Some(Value::String(path)) = table.remove(&key) else {
            return Err(format!("`{shown_key}` must be a file path"));
        };
        let path = expand(&path)?;
        let contents = std::fs::read_to_string(&path)
            .map_err(|e| format!("`{shown_key}`: cannot read {path}: {e}"))?;
        let value = contents
            .strip_suffix("\r\n")
            .or_else(|| contents.strip_suffix('\n'))
            .unwrap_or(&contents)
            .to_owned();
        table.insert(base, Value::String(value));
    }
    for (key, value) in table.iter_mut() {
        if let Value::Object(inner) = value {
            resolve_under(inner, &format!("{prefix}{key}."))?;
        }
    }
    Ok(())
}

/// Expands `${CREDENTIALS_DIRECTORY}` (systemd's credentials folder for this service).
fn expand(path: &str) -> Result<String, String> {
    const VAR: &str = "${CREDENTIALS_DIRECTORY}";
    if !path.contains(VAR) {
        return Ok(path.to_owned());
    }
    let dir = std::env::var("CREDENTIALS_DIRECTORY").map_err(|_| {
        format!("{path}: CREDENTIALS_DIRECTORY is not set (is the service started with LoadCredential=?)")
    })?;
    Ok(path.replace(VAR, &dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_key_becomes_the_value_without_its_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\n").unwrap();
        let mut t = Map::new();
        t.insert(
            "auth_token_file".into(),
            Value::String(path.display().to_string()),
        );
        resolve(&mut t).unwrap();
        assert_eq!(t.get("auth_token"), Some(&Value::String("s3cret".into())));
        assert!(!t.contains_key("auth_token_file"));
    }

    #[test]
    fn nested_tables_are_resolved_and_named_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "hmac-key").unwrap();
        let mut t = Map::new();
        t.insert(
            "receipts".into(),
            serde_json::json!({"secret_file": path.display().to_string()}),
        );
        resolve(&mut t).unwrap();
        assert_eq!(t["receipts"]["secret"], "hmac-key");
        let mut t = Map::new();
        t.insert(
            "receipts".into(),
            serde_json::json!({"secret_file": "/nonexistent"}),
        );
        assert!(
            resolve(&mut t)
                .unwrap_err()
                .starts_with("`receipts.secret_file`: cannot read")
        );
    }

    #[test]
    fn giving_both_the_value_and_the_file_is_an_error() {
        let mut t = Map::new();
        t.insert("password".into(), Value::String("a".into()));
        t.insert("password_file".into(), Value::String("/x".into()));
        assert_eq!(
            resolve(&mut t).unwrap_err(),
            "give either `password` or `password_file`, not both"
        );
    }

    #[test]
    fn an_unreadable_file_names_the_key() {
        let mut t = Map::new();
        t.insert(
            "password_file".into(),
            Value::String("/nonexistent/pw".into()),
        );
        let err = resolve(&mut t).unwrap_err();
        assert!(
            err.starts_with("`password_file`: cannot read /nonexistent/pw"),
            "{err}"
        );
    }
}
