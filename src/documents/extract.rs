//! Text out of an upload: plain text and Markdown as they are, HTML through
//! `html2text` (structure kept as Markdown), PDF through `pdf-extract` (pure
//! Rust). Anything else is refused before it is stored.

/// The formats an upload may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Markdown,
    Html,
    Pdf,
}

impl Format {
    /// From the declared media type, else from the file name's extension.
    pub fn detect(content_type: Option<&str>, filename: &str) -> Option<Self> {
        let media = content_type
            .map(|c| {
                c.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        match media.as_str() {
            "text/plain" => return Some(Self::Text),
            "text/markdown" | "text/x-markdown" => return Some(Self::Markdown),
            "text/html" | "application/xhtml+xml" => return Some(Self::Html),
            "application/pdf" => return Some(Self::Pdf),
            "" | "application/octet-stream" => {}
            _ => return None,
        }
        let ext = filename
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())?;
        match ext.as_str() {
            "txt" | "text" => Some(Self::Text),
            "md" | "markdown" => Some(Self::Markdown),
            "html" | "htm" => Some(Self::Html),
            "pdf" => Some(Self::Pdf),
            _ => None,
        }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            Self::Text => "text/plain",
            Self::Markdown => "text/markdown",
            Self::Html => "text/html",
            Self::Pdf => "application/pdf",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExtractError {
    #[error("the file is not valid UTF-8 text")]
    NotUtf8,
    #[error("the file is not a readable PDF: {0}")]
    Pdf(String),
    #[error("the HTML could not be read: {0}")]
    Html(String),
    #[error("the file holds no text")]
    Empty,
}

/// The document's text. CPU-bound (PDF especially): call it on the blocking pool.
pub fn extract(format: Format, bytes: &[u8]) -> Result<String, ExtractError> {
    let text = match format {
        Format::Text | Format::Markdown => std::str::from_utf8(bytes)
            .map_err(|_| ExtractError::NotUtf8)?
            .to_owned(),
        // A wide line keeps paragraphs whole; the splitter decides where to cut.
        Format::Html => {
            html2text::from_read(bytes, 10_000).map_err(|e| ExtractError::Html(e.to_string()))?
        }
        Format::Pdf => pdf_extract::extract_text_from_mem(bytes)
            .map_err(|e| ExtractError::Pdf(e.to_string()))?,
    };
    // NUL cannot be stored in a Postgres text column.
    let text = text.replace('\0', "");
    if text.trim().is_empty() {
        return Err(ExtractError::Empty);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_come_from_the_media_type_or_the_extension() {
        assert_eq!(
            Format::detect(Some("text/markdown; charset=utf-8"), "x"),
            Some(Format::Markdown)
        );
        assert_eq!(Format::detect(None, "Guide.PDF"), Some(Format::Pdf));
        assert_eq!(
            Format::detect(Some("application/octet-stream"), "a.htm"),
            Some(Format::Html)
        );
        assert_eq!(Format::detect(Some("image/png"), "a.md"), None);
        assert_eq!(Format::detect(None, "archive.zip"), None);
        assert_eq!(Format::detect(None, "noext"), None);
    }

    #[test]
    fn text_html_and_bad_input() {
        assert_eq!(
            extract(Format::Text, b"hi\0 there").as_deref(),
            Ok("hi there")
        );
        assert_eq!(
            extract(Format::Text, &[0xff, 0xfe]),
            Err(ExtractError::NotUtf8)
        );
        assert_eq!(
            extract(Format::Markdown, b"  \n "),
            Err(ExtractError::Empty)
        );
        let html = extract(
            Format::Html,
            b"<h1>Title</h1><p>Body <b>text</b></p><script>x()</script>",
        )
        .unwrap();
        assert!(html.contains("Title") && html.contains("Body"), "{html}");
        assert!(matches!(
            extract(Format::Pdf, b"not a pdf"),
            Err(ExtractError::Pdf(_))
        ));
    }
}
