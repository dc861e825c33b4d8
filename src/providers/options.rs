//! What a request may ask beyond text in, text out: tools, structured output
//! and the sampling options OpenAI's API has. The doors (`/v1/chat/completions`,
//! `/v1/responses`) parse their own wire shapes into these; each provider
//! writes them in its own (OpenAI's as is, Anthropic's translated) or, through
//! [`super::ChatProvider::supports`], refuses the ones it cannot honour.

use serde_json::{Value, json};

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolDef {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the arguments (an object schema).
    pub parameters: Value,
    pub strict: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    None,
    Auto,
    Required,
    /// This function, always.
    Function(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema {
        name: String,
        description: Option<String>,
        schema: Value,
        strict: Option<bool>,
    },
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenOptions {
    pub tools: Vec<ToolDef>,
    pub tool_choice: Option<ToolChoice>,
    pub parallel_tool_calls: Option<bool>,
    pub response_format: Option<ResponseFormat>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub user: Option<String>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<u32>,
}

impl GenOptions {
    /// The parameters this request sets, by their OpenAI names.
    pub fn params(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if !self.tools.is_empty() {
            out.push("tools");
        }
        if self.tool_choice.is_some() {
            out.push("tool_choice");
        }
        if self.parallel_tool_calls.is_some() {
            out.push("parallel_tool_calls");
        }
        if matches!(
            self.response_format,
            Some(ResponseFormat::JsonObject | ResponseFormat::JsonSchema { .. })
        ) {
            out.push("response_format");
        }
        if self.seed.is_some() {
            out.push("seed");
        }
        if self.presence_penalty.is_some() {
            out.push("presence_penalty");
        }
        if self.frequency_penalty.is_some() {
            out.push("frequency_penalty");
        }
        if self.user.is_some() {
            out.push("user");
        }
        if self.logprobs == Some(true) {
            out.push("logprobs");
        }
        if self.top_logprobs.is_some() {
            out.push("top_logprobs");
        }
        out
    }

    /// Whether the model may call a tool at all.
    pub fn tools_enabled(&self) -> bool {
        !self.tools.is_empty() && self.tool_choice != Some(ToolChoice::None)
    }
}

impl ToolDef {
    /// OpenAI's Chat Completions shape.
    pub fn to_openai(&self) -> Value {
        let mut function = json!({"name": self.name, "parameters": self.parameters});
        if let Some(d) = &self.description {
            function["description"] = json!(d);
        }
        if let Some(s) = self.strict {
            function["strict"] = json!(s);
        }
        json!({"type": "function", "function": function})
    }
}

impl ToolChoice {
    pub fn to_openai(&self) -> Value {
        match self {
            Self::None => json!("none"),
            Self::Auto => json!("auto"),
            Self::Required => json!("required"),
            Self::Function(name) => json!({"type": "function", "function": {"name": name}}),
        }
    }
}

impl ResponseFormat {
    pub fn to_openai(&self) -> Value {
        match self {
            Self::Text => json!({"type": "text"}),
            Self::JsonObject => json!({"type": "json_object"}),
            Self::JsonSchema {
                name,
                description,
                schema,
                strict,
            } => {
                let mut js = json!({"name": name, "schema": schema});
                if let Some(d) = description {
                    js["description"] = json!(d);
                }
                if let Some(s) = strict {
                    js["strict"] = json!(s);
                }
                json!({"type": "json_schema", "json_schema": js})
            }
        }
    }
}
