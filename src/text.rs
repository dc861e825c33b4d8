//! Text that crosses the edge: [`DisplayText`], the validated newtype for
//! names and titles other people see (chat titles, workspace, key and
//! document names), and [`json_has_nul`], the check that keeps NUL out of
//! every JSON string before it can reach Postgres (which refuses it in `text`).
//!
//! Names and titles refuse control characters, characters that reorder text
//! (bidi overrides and isolates: "invoice" + U+202E + "fdp.exe" shows as "invoiceexe.pdf")
//! and invisible ones (zero-width spaces and joiners outside emoji), so what
//! one member sees is what another member typed.

use std::fmt;

/// A trimmed name or title of 1–`max` characters, free of control,
/// direction-changing and invisible characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayText(String);

/// Why a name or title was refused; `Display` names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DisplayTextError {
    #[error("{field}: must be 1 to {max} characters")]
    Length { field: &'static str, max: usize },
    #[error("{field}: must not contain control characters")]
    Control { field: &'static str },
    #[error("{field}: must not contain invisible or text-direction characters (U+{code:04X})")]
    Hidden { field: &'static str, code: u32 },
}

impl DisplayText {
    pub fn parse(raw: &str, field: &'static str, max: usize) -> Result<Self, DisplayTextError> {
        let text = raw.trim();
        let len = text.chars().count();
        if len == 0 || len > max {
            return Err(DisplayTextError::Length { field, max });
        }
        if text.chars().any(char::is_control) {
            return Err(DisplayTextError::Control { field });
        }
        if let Some(c) = hidden_char(text) {
            return Err(DisplayTextError::Hidden {
                field,
                code: u32::from(c),
            });
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for DisplayText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Reorders the text around it.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Takes no space and shows nothing (the joiner is judged apart, below).
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{180E}'
            | '\u{200B}'
            | '\u{200C}'
            | '\u{2060}'..='\u{2064}' | '\u{3164}' | '\u{FEFF}' | '\u{FFA0}'
    )
}

/// Pictographs a zero-width joiner may glue into one emoji (👩‍💻).
fn is_emoji_part(c: char) -> bool {
    matches!(c, '\u{2600}'..='\u{27BF}' | '\u{FE0F}' | '\u{1F000}'..='\u{1FAFF}')
}

/// The first character that reorders text or hides, if any. A zero-width
/// joiner is allowed only between two emoji parts.
pub fn hidden_char(text: &str) -> Option<char> {
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if is_bidi_control(c) || is_invisible(c) {
            return Some(c);
        }
        if c == '\u{200D}' {
            let before = i.checked_sub(1).and_then(|j| chars.get(j)).copied();
            let after = chars.get(i + 1).copied();
            if !(before.is_some_and(is_emoji_part) && after.is_some_and(is_emoji_part)) {
                return Some(c);
            }
        }
    }
    None
}

/// Whether a JSON document holds a NUL (`\u0000`) in any string, key or
/// value, escaped or raw. Reads the text without parsing it, so it costs one
/// pass and never allocates.
pub fn json_has_nul(raw: &[u8]) -> bool {
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            0 => return true,
            b'\\' => {
                if raw.get(i + 1) == Some(&b'u') && raw.get(i + 2..i + 6) == Some(b"0000") {
                    return true;
                }
                // Skips the escaped character, so `\\u0000` (a backslash, then
                // the letters) is not mistaken for a NUL.
                i += 2;
            }
            _ => i += 1,
        }
    }
    false
}

/// Where the first NUL sits in a JSON document, as a field path (`title`,
/// `messages[0].content`), so the refusal can name it; `None` when the
/// document does not parse or holds none. For the error path only.
pub fn nul_field(raw: &[u8]) -> Option<String> {
    fn find(v: &serde_json::Value, path: &str) -> Option<String> {
        match v {
            serde_json::Value::String(s) if s.contains('\0') => Some(path.to_owned()),
            serde_json::Value::Array(a) => a
                .iter()
                .enumerate()
                .find_map(|(i, v)| find(v, &format!("{path}[{i}]"))),
            serde_json::Value::Object(o) => o.iter().find_map(|(k, v)| {
                if k.contains('\0') {
                    return Some(path.to_owned());
                }
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                find(v, &p)
            }),
            _ => None,
        }
    }
    let v: serde_json::Value = serde_json::from_slice(raw).ok()?;
    find(&v, "").filter(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_field_holding_a_nul_is_named() {
        assert_eq!(
            nul_field(br#"{"title":"a\u0000b"}"#).as_deref(),
            Some("title")
        );
        assert_eq!(
            nul_field(br#"{"messages":[{"content":"x"},{"content":"\u0000"}]}"#).as_deref(),
            Some("messages[1].content")
        );
        assert_eq!(nul_field(br#"{"title":"fine"}"#), None);
    }

    #[test]
    fn names_refuse_hidden_and_reordering_characters() {
        assert_eq!(
            DisplayText::parse("  Plans 2027 ", "title", 200)
                .unwrap()
                .as_str(),
            "Plans 2027"
        );
        assert!(DisplayText::parse("café ✓ 数据", "title", 200).is_ok());
        assert!(DisplayText::parse("dev 👩\u{200D}💻", "title", 200).is_ok());
        for bad in [
            "invoice\u{202E}fdp.exe",
            "a\u{2066}b",
            "zero\u{200B}width",
            "join\u{200D}ed",
            "\u{FEFF}bom",
            "soft\u{00AD}hyphen",
        ] {
            assert!(
                matches!(
                    DisplayText::parse(bad, "title", 200),
                    Err(DisplayTextError::Hidden { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            DisplayText::parse("a\nb", "title", 200),
            Err(DisplayTextError::Control { .. })
        ));
        assert!(matches!(
            DisplayText::parse("   ", "title", 200),
            Err(DisplayTextError::Length { .. })
        ));
        assert_eq!(
            DisplayText::parse("x\u{202E}", "name", 10)
                .unwrap_err()
                .to_string(),
            "name: must not contain invisible or text-direction characters (U+202E)"
        );
    }

    #[test]
    fn nul_is_found_escaped_or_raw_and_only_there() {
        assert!(json_has_nul(br#"{"a":"x\u0000y"}"#));
        assert!(json_has_nul(br#"{"a\u0000":1}"#));
        assert!(json_has_nul(b"{\"a\":\"\0\"}"));
        assert!(!json_has_nul(br#"{"a":"x\\u0000y"}"#));
        assert!(!json_has_nul(br#"{"a":"\u0001"}"#));
        assert!(!json_has_nul(br#"{"a":"plain"}"#));
    }
}
