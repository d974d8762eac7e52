//! The OpenAPI 3.1 document of the REST API (`GET /api/openapi.json`) and a docs page
//! (`GET /api/docs`), both made from the route table: its paths, methods, permissions
//! and summaries, with the request bodies' schemas derived from the types the handlers
//! parse (utoipa). A route in the table is in the document; nothing is written twice.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::OnceLock;

use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathItem,
    PathsBuilder, Ref, RefOr, Required, ResponseBuilder,
};

use super::{Access, ApiRoute, route_table};

/// A request body's schema, as a route declares it.
#[derive(Clone, Copy)]
pub struct Body {
    name: fn() -> Cow<'static, str>,
    schema: fn() -> RefOr<Schema>,
    schemas: fn(&mut Vec<(String, RefOr<Schema>)>),
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&(self.name)())
    }
}

impl Body {
    pub fn of<B: utoipa::ToSchema>() -> Body {
        Body {
            name: B::name,
            schema: <B as utoipa::PartialSchema>::schema,
            schemas: B::schemas,
        }
    }

    /// The schema's name in `components.schemas`.
    pub fn name(&self) -> Cow<'static, str> {
        (self.name)()
    }
}

const BEARER: &str = "bearer";

/// The document, made once.
pub fn document() -> &'static OpenApi {
    static DOCUMENT: OnceLock<OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(|| build(&route_table()))
}

fn method(route: &ApiRoute) -> HttpMethod {
    match route.method.as_str() {
        "POST" => HttpMethod::Post,
        "PUT" => HttpMethod::Put,
        "PATCH" => HttpMethod::Patch,
        "DELETE" => HttpMethod::Delete,
        _ => HttpMethod::Get,
    }
}

/// `post_api_v1_bots_bot_flows`: unique per method and path.
fn operation_id(route: &ApiRoute) -> String {
    let mut id = route.method.as_str().to_lowercase();
    for part in route.path.split('/').filter(|p| !p.is_empty()) {
        id.push('_');
        id.extend(
            part.chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_'),
        );
    }
    id
}

fn build(routes: &[ApiRoute]) -> OpenApi {
    let mut schemas: Vec<(String, RefOr<Schema>)> = Vec::new();
    let error = <dash_core::api::ErrorBody as utoipa::ToSchema>::name().into_owned();
    <dash_core::api::ErrorBody as utoipa::ToSchema>::schemas(&mut schemas);
    schemas.push((
        error.clone(),
        <dash_core::api::ErrorBody as utoipa::PartialSchema>::schema(),
    ));
    let mut paths = PathsBuilder::new();
    for route in routes {
        let mut operation = OperationBuilder::new()
            .summary(Some(route.summary))
            .operation_id(Some(operation_id(route)))
            .tag(
                route
                    .path
                    .split('/')
                    .nth(if route.path.starts_with("/api/v1/") {
                        3
                    } else {
                        2
                    })
                    .unwrap_or("api"),
            )
            .response(
                "2XX",
                ResponseBuilder::new().description("Success (JSON; an event stream for /events)"),
            )
            .response(
                "4XX",
                ResponseBuilder::new()
                    .description("`{\"error\": {\"code\", \"message\"}}`")
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name(error.clone())))
                            .build(),
                    ),
            );
        for name in route
            .path
            .split('/')
            .filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'))
        {
            operation = operation.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(
                        utoipa::openapi::ObjectBuilder::new()
                            .schema_type(utoipa::openapi::schema::Type::String),
                    )),
            );
        }
        if let Some(body) = route.body {
            (body.schemas)(&mut schemas);
            schemas.push((body.name().into_owned(), (body.schema)()));
            operation = operation.request_body(Some(
                RequestBodyBuilder::new()
                    .required(Some(Required::True))
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name(body.name())))
                            .build(),
                    )
                    .build(),
            ));
        }
        operation = match route.access {
            Access::Open => operation.securities(Some(Vec::<SecurityRequirement>::new())),
            Access::Caller | Access::Needs(_) => {
                let scope = match route.access {
                    Access::Needs(scope) => format!(" Needs `{scope}`."),
                    _ => String::new(),
                };
                operation
                    .description(Some(format!("{}.{scope}", route.summary)))
                    .security(SecurityRequirement::new(BEARER, Vec::<String>::new()))
            }
        };
        paths = paths.path(route.path, PathItem::new(method(route), operation));
    }
    schemas.sort_by(|a, b| a.0.cmp(&b.0));
    schemas.dedup_by(|a, b| a.0 == b.0);
    let components = ComponentsBuilder::new()
        .schemas_from_iter(schemas)
        .security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A user's access token (POST /api/auth/login) or a tenant's API key (dsk_...)",
                    ))
                    .build(),
            ),
        )
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("DashOffice REST API")
                .version(dash_core::VERSION)
                .description(Some(
                    "Bots, conversations and business data of a DashOffice tenant. See docs/api.md.",
                )),
        )
        .paths(paths)
        .components(Some(components))
        .build()
}

/// `GET /api/openapi.json`.
pub async fn json() -> Response {
    match document().to_json() {
        Ok(text) => ([(header::CONTENT_TYPE, "application/json")], text).into_response(),
        Err(err) => crate::error::ApiError::Internal(err.into()).into_response(),
    }
}

/// `GET /api/docs`: the endpoints as a page, without scripts.
pub async fn page() -> Response {
    let mut rows = String::new();
    for route in route_table() {
        let access = match route.access {
            Access::Open => "—".to_owned(),
            Access::Caller => "any credential".to_owned(),
            Access::Needs(scope) => scope.to_string(),
        };
        let body = route
            .body
            .map(|b| b.name().into_owned())
            .unwrap_or_default();
        let _ = write!(
            rows,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            route.method,
            escape(route.path),
            escape(route.summary),
            escape(&access),
            escape(&body)
        );
    }
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>DashOffice REST API</title>\
         <style>body{{font:14px system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}</style></head><body>\
         <h1>DashOffice REST API {}</h1><p>Send <code>Authorization: Bearer &lt;access token or API key&gt;</code>. \
         The machine-readable description is <a href=\"/api/openapi.json\">/api/openapi.json</a> (OpenAPI 3.1).</p>\
         <table><tr><th>method</th><th>path</th><th>what</th><th>needs</th><th>body</th></tr>{rows}</table></body></html>",
        dash_core::VERSION
    );
    let mut response = Html(html).into_response();
    // The one page with a style: inline, nothing else.
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    response
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
