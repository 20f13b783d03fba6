//! Named templates, rendered at accept time so a broken template or a missing variable is the
//! caller's 422, never a failure discovered later.
//!
//! A template is a folder under the configured directory, one file per part:
//!
//! | file | becomes | escaping |
//! | --- | --- | --- |
//! | `subject.txt` | `subject` | none |
//! | `body.txt` | `body` | none |
//! | `body.html` | `html` | HTML (auto-escaped) |
//! | `data.json` | `data` (parsed) | JSON: `{{ x }}` renders a JSON literal |
//! | `<family>.txt`, `<family>.json` | `body`, `data` for that channel family, instead of the above | as above |
//!
//! Families: `sms` (twilio, vonage), `push` (fcm, apns, webpush), `slack` (slack, slack_webhook),
//! `email` (smtp). So `order_shipped/sms.txt` is what an SMS says while `body.txt` goes by e-mail.
//! Variables are strict: using one the caller did not send is an error.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use minijinja::{Environment, UndefinedBehavior};

use crate::ack_link::AckLinks;
use notifyd_channels::FieldError;

/// Bounds the work one render may do (minijinja "fuel"): a template cannot hang the API.
const FUEL: u64 = 100_000;
/// The part files a template folder may hold.
const PARTS: &[&str] = &["subject.txt", "body.txt", "body.html", "data.json"];

/// The channel family whose specific parts a kind uses.
pub(crate) fn family(kind: &str) -> Option<&'static str> {
    match kind {
        "twilio" | "vonage" => Some("sms"),
        "fcm" | "apns" | "webpush" => Some("push"),
        "slack" | "slack_webhook" => Some("slack"),
        "smtp" => Some("email"),
        _ => None,
    }
}

/// A template could not be loaded at start.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("templates.dir: cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("template {file}: {message}")]
    Syntax { file: String, message: String },
    #[error(
        "template {file}: unexpected file (allowed: subject.txt, body.txt, body.html, data.json, <family>.txt, <family>.json)"
    )]
    UnknownPart { file: String },
    #[error(
        "template {file} uses {{{{ ack_url }}}}: set links.base_url and links.secret (or links.secret_file)"
    )]
    NeedsLinks { file: String },
}

/// Content rendered from a template.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rendered {
    pub subject: Option<String>,
    pub body: Option<String>,
    pub html: Option<String>,
    pub data: Option<serde_json::Value>,
}

/// All templates, compiled.
pub struct Templates {
    env: Environment<'static>,
    /// Template name → the part files it has.
    parts: BTreeMap<String, BTreeSet<String>>,
    /// Makes `{{ ack_url }}` for escalating notifications, when `[links]` is configured.
    ack_links: Option<AckLinks>,
    /// The first file that mentions `ack_url`: it needs `[links]`.
    ack_url_in: Option<String>,
}

impl Default for Templates {
    fn default() -> Self {
        Self {
            env: Environment::new(),
            parts: BTreeMap::new(),
            ack_links: None,
            ack_url_in: None,
        }
    }
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("names", &self.parts.keys())
            .finish()
    }
}

fn allowed_part(file: &str) -> bool {
    PARTS.contains(&file)
        || ["sms", "push", "slack", "email"]
            .iter()
            .any(|f| file == format!("{f}.txt") || file == format!("{f}.json"))
}

impl Templates {
    /// Loads and compiles every template under `dir`; the first broken file stops the start,
    /// named with its line.
    pub fn load(dir: &Path) -> Result<Self, TemplateError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| TemplateError::Io { path, source }
        };
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Names the undefined expression in the error ("`order` is undefined").
        env.set_debug(true);
        env.set_fuel(Some(FUEL));
        let mut parts: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut ack_url_in = None;
        let mut folders: Vec<_> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .collect::<Result<_, _>>()
            .map_err(io(dir))?;
        folders.sort_by_key(|e| e.file_name());
        for folder in folders {
            if !folder.path().is_dir() {
                continue;
            }
            let name = folder.file_name().to_string_lossy().into_owned();
            let mut files: Vec<_> = std::fs::read_dir(folder.path())
                .map_err(io(&folder.path()))?
                .collect::<Result<_, _>>()
                .map_err(io(&folder.path()))?;
            files.sort_by_key(|e| e.file_name());
            for file in files {
                let part = file.file_name().to_string_lossy().into_owned();
                let shown = format!("{name}/{part}");
                if !allowed_part(&part) {
                    return Err(TemplateError::UnknownPart { file: shown });
                }
                let source = std::fs::read_to_string(file.path()).map_err(io(&file.path()))?;
                if ack_url_in.is_none() && source.contains("ack_url") {
                    ack_url_in = Some(shown.clone());
                }
                env.add_template_owned(shown.clone(), source).map_err(|e| {
                    TemplateError::Syntax {
                        file: shown,
                        message: describe(&e),
                    }
                })?;
                parts.entry(name.clone()).or_default().insert(part);
            }
        }
        Ok(Self {
            env,
            parts,
            ack_links: None,
            ack_url_in,
        })
    }

    /// These templates, rendering `{{ ack_url }}` with `links` for escalating notifications;
    /// refused when a template uses it and there are no links to make.
    pub fn with_ack_links(mut self, links: Option<AckLinks>) -> Result<Self, TemplateError> {
        if let (None, Some(file)) = (&links, &self.ack_url_in) {
            return Err(TemplateError::NeedsLinks { file: file.clone() });
        }
        self.ack_links = links;
        Ok(self)
    }

    /// What makes acknowledgement links, when `[links]` is configured.
    pub fn ack_links(&self) -> Option<&AckLinks> {
        self.ack_links.as_ref()
    }

    /// The template names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.parts.keys().cloned().collect()
    }

    /// Renders template `name` for a channel of `kind` with `vars`.
    pub fn render(
        &self,
        name: &str,
        kind: &str,
        vars: &serde_json::Value,
    ) -> Result<Rendered, FieldError> {
        let parts = self.parts.get(name).ok_or_else(|| {
            FieldError::new(
                "template",
                "unknown_template",
                format!("no template named {name:?}"),
            )
        })?;
        if !vars.is_object() && !vars.is_null() {
            return Err(FieldError::new(
                "vars",
                "invalid_field",
                "vars must be a JSON object",
            ));
        }
        let family = family(kind);
        let pick = |generic: &str, ext: &str| -> Option<String> {
            family
                .map(|f| format!("{f}.{ext}"))
                .filter(|p| parts.contains(p))
                .or_else(|| parts.contains(generic).then(|| generic.to_owned()))
        };
        let render = |part: Option<String>| -> Result<Option<String>, FieldError> {
            let Some(part) = part else { return Ok(None) };
            let file = format!("{name}/{part}");
            let template = self
                .env
                .get_template(&file)
                .map_err(|e| FieldError::new("template", "template_error", describe(&e)))?;
            template
                .render(minijinja::value::Serde(vars))
                .map(Some)
                .map_err(|e| {
                    // Strict undefined with debug info: a variable the template really needs
                    // fails the render, named ("`order` is undefined"); `x | default(..)` and
                    // `x is defined` keep working with `x` absent.
                    FieldError::new(
                        "vars",
                        "template_error",
                        format!("{file}: {}", describe(&e)),
                    )
                })
        };
        let subject = render(
            parts
                .contains("subject.txt")
                .then(|| "subject.txt".to_owned()),
        )?;
        let body = render(pick("body.txt", "txt"))?;
        let html = render(parts.contains("body.html").then(|| "body.html".to_owned()))?;
        let data_part = pick("data.json", "json");
        let data = match render(data_part.clone())? {
            Some(text) => {
                let file = format!("{name}/{}", data_part.unwrap_or_default());
                let refuse = |why: String| {
                    FieldError::new("template", "template_error", format!("{file}: {why}"))
                };
                let data = serde_json::from_str(&text)
                    .map_err(|e| refuse(format!("did not render to JSON: {e}")))?;
                // Arithmetic in a template can make an integer serde_json would turn into a float.
                if let Some(path) = crate::json_bounds::inexact_integers(text.as_bytes()).first() {
                    return Err(refuse(format!(
                        "renders an integer outside the signed 64-bit range at {path:?}, which \
                         would not be kept exactly"
                    )));
                }
                Some(data)
            }
            None => None,
        };
        Ok(Rendered {
            subject: subject.map(|s| s.trim().to_owned()),
            body,
            html,
            data,
        })
    }
}

/// minijinja's message with its file and line, on one line.
fn describe(e: &minijinja::Error) -> String {
    let mut text = e.to_string();
    if let (Some(name), Some(line)) = (e.name(), e.line())
        && !text.contains(&format!("{name}:{line}"))
    {
        text.push_str(&format!(" ({name} line {line})"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        dir
    }

    fn shipped() -> Templates {
        let dir = dir_with(&[
            ("order_shipped/subject.txt", "Order {{ order }} shipped\n"),
            (
                "order_shipped/body.txt",
                "Hi {{ name }}, order {{ order }} is on its way.",
            ),
            ("order_shipped/body.html", "<p>Hi {{ name }}</p>"),
            ("order_shipped/sms.txt", "Order {{ order }} shipped."),
            (
                "order_shipped/push.json",
                "{\"title\": {{ name }}, \"order\": {{ order }}}",
            ),
        ]);
        Templates::load(dir.path()).unwrap()
    }

    #[test]
    fn email_gets_subject_text_and_escaped_html() {
        let r = shipped()
            .render(
                "order_shipped",
                "smtp",
                &json!({"name": "<Ann>", "order": 42}),
            )
            .unwrap();
        assert_eq!(r.subject.as_deref(), Some("Order 42 shipped"));
        assert_eq!(r.body.as_deref(), Some("Hi <Ann>, order 42 is on its way."));
        assert_eq!(r.html.as_deref(), Some("<p>Hi &lt;Ann&gt;</p>"));
        assert_eq!(r.data, None);
    }

    #[test]
    fn sms_uses_its_own_part() {
        let r = shipped()
            .render(
                "order_shipped",
                "twilio",
                &json!({"name": "Ann", "order": 42}),
            )
            .unwrap();
        assert_eq!(r.body.as_deref(), Some("Order 42 shipped."));
    }

    #[test]
    fn push_json_escapes_values_as_json() {
        let r = shipped()
            .render(
                "order_shipped",
                "fcm",
                &json!({"name": "A \"quoted\" name", "order": 42}),
            )
            .unwrap();
        assert_eq!(
            r.data,
            Some(json!({"title": "A \"quoted\" name", "order": 42}))
        );
    }

    #[test]
    fn a_missing_variable_is_a_rejection_naming_vars() {
        let err = shipped()
            .render("order_shipped", "smtp", &json!({"order": 42}))
            .unwrap_err();
        assert_eq!(err.field, "vars");
        assert_eq!(err.code, "template_error");
        assert!(
            err.message.contains("order_shipped/body.txt"),
            "{}",
            err.message
        );
    }

    #[test]
    fn an_optional_variable_with_a_default_or_a_defined_test_may_be_absent() {
        let dir = dir_with(&[(
            "welcome/body.txt",
            "Hi {{ name | default('friend') }}{% if coupon is defined %}, use {{ coupon }}{% endif %}.",
        )]);
        let t = Templates::load(dir.path()).unwrap();
        let r = t.render("welcome", "smtp", &json!({})).unwrap();
        assert_eq!(r.body.as_deref(), Some("Hi friend."));
        let r = t
            .render("welcome", "smtp", &json!({"name": "Ann", "coupon": "X1"}))
            .unwrap();
        assert_eq!(r.body.as_deref(), Some("Hi Ann, use X1."));
    }

    #[test]
    fn a_required_variable_that_is_absent_is_named_in_the_rejection() {
        let dir = dir_with(&[(
            "welcome/body.txt",
            "Hi {{ name | default('friend') }}, order {{ order }}",
        )]);
        let err = Templates::load(dir.path())
            .unwrap()
            .render("welcome", "smtp", &json!({}))
            .unwrap_err();
        assert_eq!(err.field, "vars");
        assert!(
            err.message.contains("`order` is undefined") && !err.message.contains("`name`"),
            "{}",
            err.message
        );
    }

    #[test]
    fn an_unknown_template_is_a_rejection_naming_template() {
        let err = shipped().render("nope", "smtp", &json!({})).unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.code),
            ("template", "unknown_template")
        );
    }

    #[test]
    fn a_syntax_error_stops_loading_with_file_and_line() {
        let dir = dir_with(&[("welcome/body.txt", "line one\nHello {{ name }\n")]);
        let err = Templates::load(dir.path()).unwrap_err().to_string();
        assert!(err.starts_with("template welcome/body.txt:"), "{err}");
        assert!(err.contains("welcome/body.txt:2"), "{err}");
    }

    #[test]
    fn an_unexpected_file_is_refused() {
        let dir = dir_with(&[("welcome/notes.md", "x")]);
        assert!(matches!(
            Templates::load(dir.path()),
            Err(TemplateError::UnknownPart { .. })
        ));
    }

    #[test]
    fn data_with_an_integer_outside_i64_is_refused_not_rounded() {
        let dir = dir_with(&[("big/data.json", "{\"n\": {{ n * 1000 }}}")]);
        let t = Templates::load(dir.path()).unwrap();
        let ok = t.render("big", "log", &json!({"n": 9_000_000})).unwrap();
        assert_eq!(ok.data, Some(json!({"n": 9_000_000_000_i64})));
        let err = t
            .render("big", "log", &json!({"n": i64::MAX / 10}))
            .unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.code),
            ("template", "template_error")
        );
        assert!(err.message.contains("\"n\""), "{}", err.message);
    }

    #[test]
    fn a_runaway_template_runs_out_of_fuel() {
        let dir = dir_with(&[(
            "loop/body.txt",
            "{% for i in range(1000) %}{% for j in range(1000) %}{{ j }}{% endfor %}{% endfor %}",
        )]);
        let err = Templates::load(dir.path())
            .unwrap()
            .render("loop", "log", &json!({}))
            .unwrap_err();
        assert!(err.message.contains("fuel"), "{}", err.message);
    }

    #[test]
    fn a_template_that_uses_the_ack_link_needs_links_configured() {
        let dir = dir_with(&[("alert/body.txt", "Down. Ack: {{ ack_url }}")]);
        let err = Templates::load(dir.path())
            .unwrap()
            .with_ack_links(None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "template alert/body.txt uses {{ ack_url }}: set links.base_url and links.secret (or links.secret_file)"
        );
        let links = AckLinks::new(
            crate::signed_link::LinkKey::new(b"0123456789abcdef").unwrap(),
            "https://notify.example.com",
        );
        let t = Templates::load(dir.path())
            .unwrap()
            .with_ack_links(Some(links))
            .unwrap();
        assert!(t.ack_links().is_some());
    }
}
