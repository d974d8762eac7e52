//! A tenant's business data through the REST API (products, customers, sellers, orders)
//! and its live event stream. Every store call takes the caller's scope; a platform admin
//! names the tenant to create in with `?tenant=`.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use dash_core::commerce::{
    Customer, CustomerInput, NewOrder, Order, OrderChange, OrderStatus, Product, ProductInput,
    Seller, SellerInput,
};
use serde::Deserialize;
use uuid::Uuid;

use super::{Caller, Page, PageQuery, page};
use crate::error::{ApiError, Json, Path, Query};
use crate::state::AppState;
use crate::store::TenantRef;
use crate::store::commerce::OrderFilter;
use crate::store::events::StreamCursor;

/// An id in a path: anything that is not a UUID names nothing.
fn id(value: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(value).map_err(|_| {
        ApiError::NotFound(format!(
            "{what} {} not found",
            dash_core::validate::quoted(value)
        ))
    })
}

/// The tenant a new record goes to: the caller's, or the one a platform admin names.
async fn tenant_for(
    state: &AppState,
    caller: &Caller,
    named: Option<&str>,
) -> Result<Uuid, ApiError> {
    match caller.tenant_for_create(named)? {
        TenantRef::Id(id) if caller.tenant.is_some() => Ok(id),
        other => Ok(state.store.tenant(&other).await?.id),
    }
}

/// `?tenant=` (platform admins) with a page.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateQuery {
    #[serde(default)]
    tenant: Option<String>,
}

/// `GET /products` query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductQuery {
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    active: Option<bool>,
}

pub async fn list_products(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<ProductQuery>,
) -> Result<axum::Json<Page<Product>>, ApiError> {
    let paging = PageQuery {
        cursor: query.cursor,
        limit: query.limit,
    };
    let limit = paging.limit()?;
    let items = state
        .store
        .products_page(caller.scope(), paging.after()?, limit + 1, query.active)
        .await?;
    Ok(axum::Json(page(items, limit, |p| p.id)))
}

pub async fn create_product(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<CreateQuery>,
    Json(input): Json<ProductInput>,
) -> Result<(StatusCode, axum::Json<Product>), ApiError> {
    let input = input.validated(true)?;
    let tenant = tenant_for(&state, &caller, query.tenant.as_deref()).await?;
    let product = state.store.create_product(tenant, &input).await?;
    Ok((StatusCode::CREATED, axum::Json(product)))
}

pub async fn show_product(
    State(state): State<AppState>,
    caller: Caller,
    Path(product): Path<String>,
) -> Result<axum::Json<Product>, ApiError> {
    let product = id(&product, "product")?;
    Ok(axum::Json(
        state.store.product(caller.scope(), product).await?,
    ))
}

pub async fn update_product(
    State(state): State<AppState>,
    caller: Caller,
    Path(product): Path<String>,
    Json(input): Json<ProductInput>,
) -> Result<axum::Json<Product>, ApiError> {
    let product = id(&product, "product")?;
    // Found first: another tenant's product is 404 whatever the body says.
    state.store.product(caller.scope(), product).await?;
    let input = input.validated(false)?;
    Ok(axum::Json(
        state
            .store
            .update_product(caller.scope(), product, &input)
            .await?,
    ))
}

pub async fn delete_product(
    State(state): State<AppState>,
    caller: Caller,
    Path(product): Path<String>,
) -> Result<axum::Json<Product>, ApiError> {
    let product = id(&product, "product")?;
    Ok(axum::Json(
        state.store.delete_product(caller.scope(), product).await?,
    ))
}

pub async fn list_customers(
    State(state): State<AppState>,
    caller: Caller,
    Query(paging): Query<PageQuery>,
) -> Result<axum::Json<Page<Customer>>, ApiError> {
    let limit = paging.limit()?;
    let items = state
        .store
        .customers_page(caller.scope(), paging.after()?, limit + 1)
        .await?;
    Ok(axum::Json(page(items, limit, |c| c.id)))
}

pub async fn create_customer(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<CreateQuery>,
    Json(input): Json<CustomerInput>,
) -> Result<(StatusCode, axum::Json<Customer>), ApiError> {
    let input = input.validated(true)?;
    let tenant = tenant_for(&state, &caller, query.tenant.as_deref()).await?;
    let customer = state.store.create_customer(tenant, &input).await?;
    Ok((StatusCode::CREATED, axum::Json(customer)))
}

pub async fn show_customer(
    State(state): State<AppState>,
    caller: Caller,
    Path(customer): Path<String>,
) -> Result<axum::Json<Customer>, ApiError> {
    let customer = id(&customer, "customer")?;
    Ok(axum::Json(
        state.store.customer(caller.scope(), customer).await?,
    ))
}

pub async fn update_customer(
    State(state): State<AppState>,
    caller: Caller,
    Path(customer): Path<String>,
    Json(input): Json<CustomerInput>,
) -> Result<axum::Json<Customer>, ApiError> {
    let customer = id(&customer, "customer")?;
    state.store.customer(caller.scope(), customer).await?;
    let input = input.validated(false)?;
    Ok(axum::Json(
        state
            .store
            .update_customer(caller.scope(), customer, &input)
            .await?,
    ))
}

pub async fn list_sellers(
    State(state): State<AppState>,
    caller: Caller,
    Query(paging): Query<PageQuery>,
) -> Result<axum::Json<Page<Seller>>, ApiError> {
    let limit = paging.limit()?;
    let items = state
        .store
        .sellers_page(caller.scope(), paging.after()?, limit + 1)
        .await?;
    Ok(axum::Json(page(items, limit, |s| s.id)))
}

pub async fn create_seller(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<CreateQuery>,
    Json(input): Json<SellerInput>,
) -> Result<(StatusCode, axum::Json<Seller>), ApiError> {
    let input = input.validated(true)?;
    let tenant = tenant_for(&state, &caller, query.tenant.as_deref()).await?;
    let seller = state.store.create_seller(tenant, &input).await?;
    Ok((StatusCode::CREATED, axum::Json(seller)))
}

pub async fn show_seller(
    State(state): State<AppState>,
    caller: Caller,
    Path(seller): Path<String>,
) -> Result<axum::Json<Seller>, ApiError> {
    let seller = id(&seller, "seller")?;
    Ok(axum::Json(
        state.store.seller(caller.scope(), seller).await?,
    ))
}

pub async fn update_seller(
    State(state): State<AppState>,
    caller: Caller,
    Path(seller): Path<String>,
    Json(input): Json<SellerInput>,
) -> Result<axum::Json<Seller>, ApiError> {
    let seller = id(&seller, "seller")?;
    state.store.seller(caller.scope(), seller).await?;
    let input = input.validated(false)?;
    Ok(axum::Json(
        state
            .store
            .update_seller(caller.scope(), seller, &input)
            .await?,
    ))
}

/// `GET /orders` query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderQuery {
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    status: Option<OrderStatus>,
    #[serde(default)]
    customer_id: Option<Uuid>,
}

pub async fn list_orders(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<OrderQuery>,
) -> Result<axum::Json<Page<Order>>, ApiError> {
    let paging = PageQuery {
        cursor: query.cursor,
        limit: query.limit,
    };
    let limit = paging.limit()?;
    let filter = OrderFilter {
        status: query.status,
        customer: query.customer_id,
    };
    let items = state
        .store
        .orders_page(caller.scope(), paging.after()?, limit + 1, &filter)
        .await?;
    Ok(axum::Json(page(items, limit, |o| o.id)))
}

pub async fn create_order(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<CreateQuery>,
    Json(order): Json<NewOrder>,
) -> Result<(StatusCode, axum::Json<Order>), ApiError> {
    let order = order.validated()?;
    let tenant = tenant_for(&state, &caller, query.tenant.as_deref()).await?;
    let order = state.store.create_order(tenant, &order).await?;
    tracing::info!(order = %order.id, "order created through the API");
    Ok((StatusCode::CREATED, axum::Json(order)))
}

pub async fn show_order(
    State(state): State<AppState>,
    caller: Caller,
    Path(order): Path<String>,
) -> Result<axum::Json<Order>, ApiError> {
    let order = id(&order, "order")?;
    Ok(axum::Json(state.store.order(caller.scope(), order).await?))
}

pub async fn change_order(
    State(state): State<AppState>,
    caller: Caller,
    Path(order): Path<String>,
    Json(change): Json<OrderChange>,
) -> Result<axum::Json<Order>, ApiError> {
    let order = id(&order, "order")?;
    state.store.order(caller.scope(), order).await?;
    if change == OrderChange::default() {
        return Err(ApiError::BadRequest(
            "nothing to change: give a status, seller_id or notes".into(),
        ));
    }
    Ok(axum::Json(
        state
            .store
            .change_order(caller.scope(), order, &change)
            .await?,
    ))
}

/// `GET /events` query: where to start, and (platform admins) whose events.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    /// Start after this event id (as `Last-Event-ID`; `0` is the start of what is kept);
    /// absent: only new events.
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
}

/// How often a stream looks for new events in the log.
const EVENT_POLL: Duration = Duration::from_millis(250);

/// `GET /api/v1/events`: Server-Sent Events of the caller's tenant, from the durable log:
/// `id` is the event's number, `event` its kind, `data` its JSON. A client reconnecting
/// with `Last-Event-ID` (or `?after=`) gets what it missed, as far as the log still holds.
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Query(query): Query<EventQuery>,
) -> Result<Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let tenant = match caller.tenant {
        Some(own) => own,
        None => {
            let named = query.tenant.as_deref().ok_or_else(|| {
                ApiError::from(dash_core::ValidationError::new(
                    "tenant",
                    "a platform admin names the tenant whose events to follow",
                ))
            })?;
            state.store.tenant(&TenantRef::parse(named)).await?.id
        }
    };
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(query.after);
    let start = match resume {
        Some(text) => StreamCursor::parse(&text).ok_or_else(|| {
            ApiError::from(dash_core::ValidationError::new(
                "Last-Event-ID",
                "pass back the id of the last event received",
            ))
        })?,
        None => state.store.stream_position(tenant).await?,
    };
    let store = state.store.clone();
    let stop = state.pipeline.shutdown_token();
    let stream = futures_util::stream::unfold(
        (start, std::collections::VecDeque::new()),
        move |(mut last, mut ready)| {
            let store = store.clone();
            let stop = stop.clone();
            async move {
                loop {
                    if let Some(event) = ready.pop_front() {
                        return Some((Ok(event), (last, ready)));
                    }
                    match store.stream_after(tenant, last, 100).await {
                        Ok(batch) if !batch.is_empty() => {
                            for item in batch {
                                last = item.cursor;
                                let data = serde_json::json!({
                                    "kind": item.kind, "at": item.at, "data": item.data,
                                });
                                ready.push_back(
                                    Event::default()
                                        .id(item.cursor.to_string())
                                        .event(item.kind)
                                        .data(data.to_string()),
                                );
                            }
                            continue;
                        }
                        Ok(_) => {}
                        Err(err) => tracing::warn!(error = %err, "cannot read the event stream"),
                    }
                    tokio::select! {
                        () = stop.cancelled() => return None,
                        () = tokio::time::sleep(EVENT_POLL) => {}
                    }
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
