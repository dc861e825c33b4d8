//! The emails themselves: subject, plain text and HTML for each template name
//! an outbox row can carry. Payload values are escaped in the HTML part.
//!
//! | template         | payload                                                      |
//! |------------------|--------------------------------------------------------------|
//! | `verify_email`   | `username`, `link`, `expires_in`                             |
//! | `password_reset` | `username`, `link`, `expires_in`                             |
//! | `invite`         | `workspace_name`, `inviter`, `role`, `link`, `expires_in`    |
//! | `budget_alert`   | `scope`, `period`, `threshold_pct`, `spent_micros`, `limit_micros` (src/admission.rs) |
//! | `payment_failed` | `workspace_name`, optional `amount_micros`, optional `link`  |

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    #[error("unknown template {0:?}")]
    UnknownTemplate(String),
    #[error("template {template}: payload lacks {field}")]
    Missing {
        template: &'static str,
        field: &'static str,
    },
}

/// Renders `template` with `payload`; an unknown template or a missing field is an error.
pub fn render(template: &str, payload: &Value) -> Result<Rendered, RenderError> {
    match template {
        "verify_email" => verify_email(payload),
        "password_reset" => password_reset(payload),
        "invite" => invite(payload),
        "budget_alert" => Ok(budget_alert(payload)),
        "payment_failed" => Ok(payment_failed(payload)),
        other => Err(RenderError::UnknownTemplate(other.to_owned())),
    }
}

fn field<'a>(
    p: &'a Value,
    template: &'static str,
    field: &'static str,
) -> Result<&'a str, RenderError> {
    p.get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(RenderError::Missing { template, field })
}

fn text_or<'a>(p: &'a Value, field: &str, default: &'a str) -> &'a str {
    p.get(field).and_then(Value::as_str).unwrap_or(default)
}

fn verify_email(p: &Value) -> Result<Rendered, RenderError> {
    let link = field(p, "verify_email", "link")?;
    let name = text_or(p, "username", "there");
    let expires = text_or(p, "expires_in", "24 hours");
    Ok(Rendered {
        subject: "Verify your email address".into(),
        text: format!(
            "Hi {name},\n\nConfirm that this is your address by opening this link:\n\n{link}\n\n\
             The link works once and expires in {expires}. If you did not sign up, ignore this email.\n"
        ),
        html: page(
            &format!("Hi {},", escape(name)),
            "Confirm that this is your address:",
            Some(("Verify email", link)),
            &format!(
                "The link works once and expires in {expires}. If you did not sign up, ignore this email."
            ),
        ),
    })
}

fn password_reset(p: &Value) -> Result<Rendered, RenderError> {
    let link = field(p, "password_reset", "link")?;
    let name = text_or(p, "username", "there");
    let expires = text_or(p, "expires_in", "1 hour");
    Ok(Rendered {
        subject: "Reset your password".into(),
        text: format!(
            "Hi {name},\n\nSomeone (hopefully you) asked to reset your password. Choose a new one here:\n\n\
             {link}\n\nThe link works once and expires in {expires}; every signed-in session is signed \
             out when you use it. If you did not ask, ignore this email: your password is unchanged.\n"
        ),
        html: page(
            &format!("Hi {},", escape(name)),
            "Someone (hopefully you) asked to reset your password.",
            Some(("Choose a new password", link)),
            &format!(
                "The link works once and expires in {expires}. If you did not ask, ignore this \
                 email: your password is unchanged."
            ),
        ),
    })
}

fn invite(p: &Value) -> Result<Rendered, RenderError> {
    let link = field(p, "invite", "link")?;
    let workspace = field(p, "invite", "workspace_name")?;
    let inviter = text_or(p, "inviter", "A teammate");
    let role = text_or(p, "role", "member");
    let expires = text_or(p, "expires_in", "7 days");
    Ok(Rendered {
        subject: format!("{inviter} invited you to {workspace} on Switchboard"),
        text: format!(
            "{inviter} invited you to join the workspace \"{workspace}\" as {role}.\n\n\
             Accept the invitation (sign in or sign up with this email address first):\n\n{link}\n\n\
             The invitation works once and expires in {expires}.\n"
        ),
        html: page(
            &format!(
                "{} invited you to join <b>{}</b> as {}.",
                escape(inviter),
                escape(workspace),
                escape(role)
            ),
            "Sign in or sign up with this email address, then accept:",
            Some(("Accept invitation", link)),
            &format!("The invitation works once and expires in {expires}."),
        ),
    })
}

fn budget_alert(p: &Value) -> Rendered {
    let pct = p
        .get("threshold_pct")
        .and_then(Value::as_i64)
        .unwrap_or(100);
    let spent = p.get("spent_micros").and_then(Value::as_i64).unwrap_or(0);
    let limit = p.get("limit_micros").and_then(Value::as_i64).unwrap_or(0);
    let scope = match text_or(p, "scope", "workspace") {
        "user" => "your own",
        "workspace" => "your workspace's",
        "api_key" => "an API key's",
        _ => "the deployment's",
    };
    let period = text_or(p, "period", "monthly");
    let (spent, limit) = (dollars(spent), dollars(limit));
    let what = if pct >= 100 {
        "is used up: new answers are refused until the period resets"
    } else {
        "is running low"
    };
    Rendered {
        subject: format!("Budget alert: {pct}% of {scope} {period} budget used"),
        text: format!(
            "{pct}% of {scope} {period} budget is spent ({spent} of {limit}).\n\nThe budget {what}.\n"
        ),
        html: page(
            &format!(
                "{pct}% of {} {} budget is spent ({spent} of {limit}).",
                escape(scope),
                escape(period)
            ),
            &format!("The budget {what}."),
            None,
            "",
        ),
    }
}

fn payment_failed(p: &Value) -> Rendered {
    let workspace = text_or(p, "workspace_name", "your workspace");
    let amount = p
        .get("amount_micros")
        .and_then(Value::as_i64)
        .map(|m| format!(" of {}", dollars(m)))
        .unwrap_or_default();
    let link = p.get("link").and_then(Value::as_str);
    let fix = link.map_or_else(String::new, |l| {
        format!("\n\nUpdate your payment method:\n\n{l}")
    });
    Rendered {
        subject: format!("Payment failed for {workspace}"),
        text: format!(
            "We could not collect the payment{amount} for {workspace}.{fix}\n\n\
             Without a successful payment the workspace returns to the free plan.\n"
        ),
        html: page(
            &format!(
                "We could not collect the payment{} for <b>{}</b>.",
                escape(&amount),
                escape(workspace)
            ),
            "Without a successful payment the workspace returns to the free plan.",
            link.map(|l| ("Update payment method", l)),
            "",
        ),
    }
}

/// Micro-dollars as `$d.cc`, integer arithmetic only (cents truncated).
pub fn dollars(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let m = micros.unsigned_abs();
    format!("{sign}${}.{:02}", m / 1_000_000, (m % 1_000_000) / 10_000)
}

/// One simple, inline-styled page; `lead` may hold markup the caller escaped.
fn page(lead: &str, body: &str, button: Option<(&str, &str)>, footer: &str) -> String {
    let button = button.map_or_else(String::new, |(label, href)| {
        format!(
            "<p><a href=\"{}\" style=\"display:inline-block;padding:10px 18px;background:#2563eb;\
             color:#fff;border-radius:6px;text-decoration:none\">{}</a></p>\
             <p style=\"font-size:12px;color:#555\">Or paste this link: {}</p>",
            escape(href),
            escape(label),
            escape(href)
        )
    });
    format!(
        "<!doctype html><html><body style=\"font-family:sans-serif;line-height:1.5\">\
         <p>{lead}</p><p>{}</p>{button}<p style=\"font-size:12px;color:#555\">{}</p>\
         </body></html>",
        escape(body),
        escape(footer)
    )
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn links_appear_in_both_parts_and_markup_is_escaped() {
        let r = render(
            "invite",
            &json!({"workspace_name": "<script>x</script>", "inviter": "Ada & co",
                    "role": "admin", "link": "http://h/invite?token=abc&x=1"}),
        )
        .unwrap();
        assert!(r.text.contains("http://h/invite?token=abc&x=1"));
        assert!(r.html.contains("http://h/invite?token=abc&amp;x=1"));
        assert!(r.html.contains("&lt;script&gt;x&lt;/script&gt;"));
        assert!(!r.html.contains("<script>"));
        assert!(r.html.contains("Ada &amp; co"));
    }

    #[test]
    fn missing_links_and_unknown_templates_are_errors() {
        assert_eq!(
            render("verify_email", &json!({"username": "ada"})),
            Err(RenderError::Missing {
                template: "verify_email",
                field: "link"
            })
        );
        assert!(matches!(
            render("nope", &json!({})),
            Err(RenderError::UnknownTemplate(_))
        ));
    }

    #[test]
    fn budget_alert_reads_the_payload_admission_writes() {
        let r = render(
            "budget_alert",
            &json!({"scope": "workspace", "scope_id": null, "period": "daily",
                    "threshold_pct": 80, "spent_micros": 80_000, "limit_micros": 100_000}),
        )
        .unwrap();
        assert_eq!(
            r.subject,
            "Budget alert: 80% of your workspace's daily budget used"
        );
        assert!(r.text.contains("($0.08 of $0.10)"), "{}", r.text);
    }

    #[test]
    fn dollars_use_integer_cents() {
        assert_eq!(dollars(0), "$0.00");
        assert_eq!(dollars(1_234_567), "$1.23");
        assert_eq!(dollars(-50_000), "-$0.05");
        assert_eq!(dollars(i64::MIN), "-$9223372036854.77");
    }
}
