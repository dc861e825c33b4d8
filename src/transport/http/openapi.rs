//! `/api/openapi.json`, generated from the handlers' annotations.

use axum::{Json, Router, routing::get};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use super::{admin, analytics, auth, chat_stream, chats, documents, health, keys, models, ops};
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "Switchboard", description = "Real-time AI chat server"),
    paths(health::health, health::ready, auth::signup, auth::signin, auth::refresh, auth::signout, auth::me,
          chats::create_chat, chats::list_chats, chats::get_chat, chats::rename_chat, chats::delete_chat,
          chats::list_messages, chat_stream::send_message, chat_stream::follow_events, chat_stream::events_ticket,
          documents::upload_document, documents::list_documents, documents::get_document,
          documents::delete_document, documents::reindex_document, documents::search_documents,
          analytics::usage, analytics::costs_daily, keys::create_key, keys::list_keys, keys::revoke_key,
          models::list_models,
          admin::list_users, admin::list_workspaces, admin::audit, admin::set_admin, admin::set_disabled,
          admin::revoke_sessions, admin::set_plan, ops::snapshot, ops::stream),
    components(schemas(auth::SignupRequest, auth::SigninRequest, auth::RefreshRequest, auth::TokenResponse,
                       crate::store::users::User, health::Health,
                       chats::CreateChatRequest, chats::RenameChatRequest, chats::ChatList, chats::MessageList,
                       crate::store::chats::Chat, crate::store::messages::Message, chat_stream::SendMessage, chat_stream::EventsTicket,
                       documents::TextUpload, documents::SearchRequest, documents::SearchResults,
                       crate::store::documents::Document, crate::store::documents::Hit,
                       crate::documents::retrieval::Citation, crate::protocol::DocumentsChoice,
                       analytics::EmbeddingCacheView,
                       analytics::UsageView, analytics::BudgetStanding, analytics::DailyCost,
                       keys::CreateKey, keys::CreatedKey, keys::KeyList, crate::store::api_keys::ApiKey,
                       models::ModelList, models::ModelChoice,
                       admin::UserList, admin::WorkspaceList, admin::AuditList, admin::SetAdmin, admin::SetDisabled,
                       admin::SetPlan, crate::admin::Outcome, crate::store::admin::AdminUser,
                       crate::store::admin::AdminWorkspace, crate::store::admin::AuditEntry,
                       crate::actors::ops::OpsSnapshot)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = api.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("JWT")
                        .build(),
                ),
            );
        }
    }
}

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/api/openapi.json",
        get(|| async {
            let mut doc = ApiDoc::openapi();
            doc.merge(super::workspaces::AccountsApiDoc::openapi());
            doc.merge(super::billing::BillingDoc::openapi());
            super::openapi_extra::add(&mut doc);
            Json(super::openapi_extra::finish(&doc))
        }),
    )
}
