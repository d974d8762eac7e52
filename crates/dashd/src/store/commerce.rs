//! A tenant's business data: products, sellers, customers and orders. Every call takes
//! the caller's [`TenantScope`] (or, to create, the tenant itself) and filters by it in
//! SQL; a seller or product named in a request must belong to the same tenant. Orders are
//! written with their items, stock and an `order.created` event in one transaction, from
//! the API or from a flow's step ([`insert_order`], inside the step's commit).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dash_core::commerce::{
    Customer, CustomerInput, NewOrder, Order, OrderChange, OrderItem, OrderStatus, Product,
    ProductInput, Seller, SellerInput,
};
use sqlx::types::Json;
use uuid::Uuid;

use super::events::append_event;
use super::sql::{Row, Tx, sql};
use super::{SqlStore, StoreError, StoreResult, TenantScope, now, parse_status};

/// Filters of an order list.
#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    pub status: Option<OrderStatus>,
    pub customer: Option<Uuid>,
}

/// Records of products, sellers, customers and orders.
#[async_trait]
pub trait CommerceStore: Send + Sync {
    async fn create_product(&self, tenant: Uuid, input: &ProductInput) -> StoreResult<Product>;
    async fn products_page(
        &self,
        scope: TenantScope,
        after: Option<Uuid>,
        limit: u32,
        active: Option<bool>,
    ) -> StoreResult<Vec<Product>>;
    async fn product(&self, scope: TenantScope, id: Uuid) -> StoreResult<Product>;
    async fn update_product(
        &self,
        scope: TenantScope,
        id: Uuid,
        input: &ProductInput,
    ) -> StoreResult<Product>;
    async fn delete_product(&self, scope: TenantScope, id: Uuid) -> StoreResult<Product>;

    async fn create_seller(&self, tenant: Uuid, input: &SellerInput) -> StoreResult<Seller>;
    async fn sellers_page(
        &self,
        scope: TenantScope,
        after: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Vec<Seller>>;
    async fn seller(&self, scope: TenantScope, id: Uuid) -> StoreResult<Seller>;
    async fn update_seller(
        &self,
        scope: TenantScope,
        id: Uuid,
        input: &SellerInput,
    ) -> StoreResult<Seller>;

    async fn create_customer(&self, tenant: Uuid, input: &CustomerInput) -> StoreResult<Customer>;
    async fn customers_page(
        &self,
        scope: TenantScope,
        after: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Vec<Customer>>;
    async fn customer(&self, scope: TenantScope, id: Uuid) -> StoreResult<Customer>;
    async fn update_customer(
        &self,
        scope: TenantScope,
        id: Uuid,
        input: &CustomerInput,
    ) -> StoreResult<Customer>;

    /// Creates an order from the API (its items priced from the catalogue).
    async fn create_order(&self, tenant: Uuid, order: &NewOrder) -> StoreResult<Order>;
    async fn orders_page(
        &self,
        scope: TenantScope,
        after: Option<Uuid>,
        limit: u32,
        filter: &OrderFilter,
    ) -> StoreResult<Vec<Order>>;
    async fn order(&self, scope: TenantScope, id: Uuid) -> StoreResult<Order>;
    /// Moves an order along its states (cancelling gives the stock back), or changes
    /// its seller or notes.
    async fn change_order(
        &self,
        scope: TenantScope,
        id: Uuid,
        change: &OrderChange,
    ) -> StoreResult<Order>;
}

fn not_found(what: &str, id: Uuid) -> StoreError {
    StoreError::NotFound {
        what: format!("{what} {id}"),
    }
}

fn product_from_row(row: &Row) -> StoreResult<Product> {
    Ok(Product {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        sku: row.try_get("sku")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        price_cents: row.try_get("price_cents")?,
        currency: row.try_get("currency")?,
        stock: row.try_get("stock")?,
        active: row.try_get("active")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn seller_from_row(row: &Row) -> StoreResult<Seller> {
    Ok(Seller {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        email: row.try_get("email")?,
        phone: row.try_get("phone")?,
        active: row.try_get("active")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn customer_from_row(row: &Row) -> StoreResult<Customer> {
    Ok(Customer {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        contact: row.try_get("contact")?,
        name: row.try_get("name")?,
        vars: row
            .try_get::<Json<serde_json::Map<String, serde_json::Value>>>("vars")?
            .0,
        seller_id: row.try_get("seller_id")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn sku_conflict(err: sqlx::Error, sku: &str) -> StoreError {
    match err.as_database_error() {
        Some(db) if db.is_unique_violation() => StoreError::Conflict {
            message: format!("a product with SKU {sku} already exists"),
            field: Some("sku"),
        },
        _ => StoreError::Database(err),
    }
}

/// Refuses a seller that is not the tenant's (as if it did not exist).
async fn check_seller(tx: &mut Tx, tenant: Uuid, seller: Option<Uuid>) -> StoreResult<()> {
    let Some(seller) = seller else {
        return Ok(());
    };
    let found: Option<i64> = sql("SELECT 1 FROM sellers WHERE id = $1 AND tenant_id = $2")
        .bind(seller)
        .bind(tenant)
        .fetch_optional_scalar(&mut *tx)
        .await?;
    match found {
        Some(_) => Ok(()),
        None => Err(StoreError::Conflict {
            message: format!("seller {seller} not found in this tenant"),
            field: Some("seller_id"),
        }),
    }
}

async fn find_product(tx: &mut Tx, scope: TenantScope, id: Uuid) -> StoreResult<Product> {
    sql("SELECT * FROM products WHERE id = $1 AND ($2 IS NULL OR tenant_id = $2)")
        .bind(id)
        .bind(scope.tenant())
        .locking("FOR UPDATE")
        .fetch_optional(&mut *tx)
        .await?
        .as_ref()
        .map(product_from_row)
        .transpose()?
        .ok_or_else(|| not_found("product", id))
}

async fn find_seller(tx: &mut Tx, scope: TenantScope, id: Uuid) -> StoreResult<Seller> {
    sql("SELECT * FROM sellers WHERE id = $1 AND ($2 IS NULL OR tenant_id = $2)")
        .bind(id)
        .bind(scope.tenant())
        .locking("FOR UPDATE")
        .fetch_optional(&mut *tx)
        .await?
        .as_ref()
        .map(seller_from_row)
        .transpose()?
        .ok_or_else(|| not_found("seller", id))
}

async fn find_customer(tx: &mut Tx, scope: TenantScope, id: Uuid) -> StoreResult<Customer> {
    sql("SELECT * FROM customers WHERE id = $1 AND ($2 IS NULL OR tenant_id = $2)")
        .bind(id)
        .bind(scope.tenant())
        .locking("FOR UPDATE")
        .fetch_optional(&mut *tx)
        .await?
        .as_ref()
        .map(customer_from_row)
        .transpose()?
        .ok_or_else(|| not_found("customer", id))
}

/// The tenant's customer for `contact`, created if new; a name given replaces the
/// stored one, and `vars` are merged in.
pub(crate) async fn upsert_customer(
    tx: &mut Tx,
    tenant: Uuid,
    contact: &str,
    name: Option<&str>,
    vars: &serde_json::Map<String, serde_json::Value>,
    at: DateTime<Utc>,
) -> StoreResult<Customer> {
    let existing = sql("SELECT * FROM customers WHERE tenant_id = $1 AND contact = $2")
        .bind(tenant)
        .bind(contact)
        .locking("FOR UPDATE")
        .fetch_optional(&mut *tx)
        .await?;
    match existing {
        Some(row) => {
            let mut customer = customer_from_row(&row)?;
            if let Some(name) = name {
                customer.name = Some(name.to_owned());
            }
            merge_vars(&mut customer.vars, vars);
            customer.updated_at = at;
            sql("UPDATE customers SET name = $1, vars = $2, updated_at = $3 WHERE id = $4")
                .bind(customer.name.as_deref())
                .bind(Json(&customer.vars))
                .bind(at)
                .bind(customer.id)
                .execute(&mut *tx)
                .await?;
            Ok(customer)
        }
        None => {
            let mut merged = serde_json::Map::new();
            merge_vars(&mut merged, vars);
            let customer = Customer {
                id: Uuid::now_v7(),
                tenant_id: tenant,
                contact: contact.to_owned(),
                name: name.map(str::to_owned),
                vars: merged,
                seller_id: None,
                created_at: at,
                updated_at: at,
            };
            insert_customer(tx, &customer).await?;
            Ok(customer)
        }
    }
}

async fn insert_customer(tx: &mut Tx, customer: &Customer) -> StoreResult<()> {
    sql("INSERT INTO customers (id, tenant_id, contact, name, vars, seller_id, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
    .bind(customer.id)
    .bind(customer.tenant_id)
    .bind(customer.contact.as_str())
    .bind(customer.name.as_deref())
    .bind(Json(&customer.vars))
    .bind(customer.seller_id)
    .bind(customer.created_at)
    .bind(customer.updated_at)
    .execute(&mut *tx)
    .await
    .map_err(|err| match err.as_database_error() {
        Some(db) if db.is_unique_violation() => StoreError::Conflict {
            message: format!("a customer with contact {} already exists", customer.contact),
            field: Some("contact"),
        },
        _ => StoreError::Database(err),
    })?;
    Ok(())
}

/// Merges variables: a `null` removes one.
fn merge_vars(
    into: &mut serde_json::Map<String, serde_json::Value>,
    vars: &serde_json::Map<String, serde_json::Value>,
) {
    for (key, value) in vars {
        if value.is_null() {
            into.remove(key);
        } else {
            into.insert(key.clone(), value.clone());
        }
    }
}

/// Writes an order in the caller's transaction: its customer (created if new), its
/// items priced from the catalogue (stock taken), and an `order.created` event.
pub(crate) async fn insert_order(
    tx: &mut Tx,
    tenant: Uuid,
    bot: Option<Uuid>,
    source: &str,
    new: &NewOrder,
    vars: &serde_json::Map<String, serde_json::Value>,
    at: DateTime<Utc>,
) -> StoreResult<Order> {
    check_seller(tx, tenant, new.seller_id).await?;
    let customer = upsert_customer(
        tx,
        tenant,
        &new.contact,
        new.customer_name.as_deref(),
        vars,
        at,
    )
    .await?;
    let mut items = Vec::with_capacity(new.items.len());
    let mut currency = new.currency.clone();
    for item in &new.items {
        let line = match &item.sku {
            Some(sku) => {
                let product =
                    sql("SELECT * FROM products WHERE tenant_id = $1 AND sku = $2 AND active = $3")
                        .bind(tenant)
                        .bind(sku.as_str())
                        .bind(true)
                        .locking("FOR UPDATE")
                        .fetch_optional(&mut *tx)
                        .await?
                        .as_ref()
                        .map(product_from_row)
                        .transpose()?
                        .ok_or_else(|| StoreError::Conflict {
                            message: format!("no active product with SKU {sku} in the catalogue"),
                            field: Some("items"),
                        })?;
                if let Some(stock) = product.stock {
                    if stock < item.quantity {
                        return Err(StoreError::Conflict {
                            message: format!(
                                "only {stock} of {sku} in stock, {} ordered",
                                item.quantity
                            ),
                            field: Some("items"),
                        });
                    }
                    sql("UPDATE products SET stock = stock - $1, updated_at = $2 WHERE id = $3")
                        .bind(item.quantity)
                        .bind(at)
                        .bind(product.id)
                        .execute(&mut *tx)
                        .await?;
                }
                match &currency {
                    Some(code) if *code != product.currency => {
                        return Err(StoreError::Conflict {
                            message: format!(
                                "{sku} is priced in {}, the order in {code}",
                                product.currency
                            ),
                            field: Some("currency"),
                        });
                    }
                    Some(_) => {}
                    None => currency = Some(product.currency.clone()),
                }
                OrderItem {
                    product_id: Some(product.id),
                    sku: Some(product.sku),
                    name: item.name.clone().unwrap_or(product.name),
                    quantity: item.quantity,
                    unit_price_cents: item.unit_price_cents.unwrap_or(product.price_cents),
                }
            }
            None => OrderItem {
                product_id: None,
                sku: None,
                name: item.name.clone().unwrap_or_default(),
                quantity: item.quantity,
                unit_price_cents: item.unit_price_cents.unwrap_or(0),
            },
        };
        items.push(line);
    }
    let currency = currency.ok_or_else(|| StoreError::Conflict {
        message: "give the order's currency: no item names a catalogue product".into(),
        field: Some("currency"),
    })?;
    let total_cents = items
        .iter()
        .try_fold(0i64, |sum, item| {
            item.unit_price_cents
                .checked_mul(item.quantity)
                .and_then(|line| sum.checked_add(line))
        })
        .ok_or_else(|| StoreError::Conflict {
            message: "the order's total is too large".into(),
            field: Some("items"),
        })?;
    let order = Order {
        id: Uuid::now_v7(),
        tenant_id: tenant,
        bot_id: bot,
        customer_id: customer.id,
        contact: customer.contact.clone(),
        seller_id: new.seller_id.or(customer.seller_id),
        status: OrderStatus::Pending,
        currency,
        total_cents,
        notes: new.notes.clone(),
        source: source.to_owned(),
        items,
        created_at: at,
        updated_at: at,
    };
    sql("INSERT INTO orders (id, tenant_id, bot_id, customer_id, contact, seller_id, status, currency, \
         total_cents, notes, source, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)")
    .bind(order.id)
    .bind(tenant)
    .bind(order.bot_id)
    .bind(order.customer_id)
    .bind(order.contact.as_str())
    .bind(order.seller_id)
    .bind(order.status.as_str())
    .bind(order.currency.as_str())
    .bind(order.total_cents)
    .bind(order.notes.as_deref())
    .bind(source)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    for (line, item) in order.items.iter().enumerate() {
        sql("INSERT INTO order_items (order_id, line, product_id, sku, name, quantity, unit_price_cents) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)")
        .bind(order.id)
        .bind(i64::try_from(line).unwrap_or(i64::MAX))
        .bind(item.product_id)
        .bind(item.sku.as_deref())
        .bind(item.name.as_str())
        .bind(item.quantity)
        .bind(item.unit_price_cents)
        .execute(&mut *tx)
        .await?;
    }
    append_event(tx, tenant, "order.created", &order_event(&order), at).await?;
    Ok(order)
}

/// What an order event carries.
fn order_event(order: &Order) -> serde_json::Value {
    serde_json::json!({
        "order_id": order.id,
        "status": order.status,
        "contact": order.contact,
        "bot_id": order.bot_id,
        "total_cents": order.total_cents,
        "currency": order.currency,
        "source": order.source,
    })
}

/// Orders from their rows, each with its items (one query for the items of all).
async fn with_items<'c>(
    exec: impl Into<super::sql::Exec<'c>>,
    rows: Vec<Row>,
) -> StoreResult<Vec<Order>> {
    let mut orders = Vec::with_capacity(rows.len());
    for row in &rows {
        orders.push(Order {
            id: row.try_get("id")?,
            tenant_id: row.try_get("tenant_id")?,
            bot_id: row.try_get("bot_id")?,
            customer_id: row.try_get("customer_id")?,
            contact: row.try_get("contact")?,
            seller_id: row.try_get("seller_id")?,
            status: parse_status(&row.try_get::<String>("status")?)?,
            currency: row.try_get("currency")?,
            total_cents: row.try_get("total_cents")?,
            notes: row.try_get("notes")?,
            source: row.try_get("source")?,
            items: Vec::new(),
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        });
    }
    let (Some(first), Some(last)) = (
        orders.iter().map(|o| o.id).min(),
        orders.iter().map(|o| o.id).max(),
    ) else {
        return Ok(orders);
    };
    // The page's orders are a range of ids of one tenant: fetch their items at once.
    let items = sql(
        "SELECT i.order_id, i.product_id, i.sku, i.name, i.quantity, i.unit_price_cents \
         FROM order_items i JOIN orders o ON o.id = i.order_id \
         WHERE i.order_id >= $1 AND i.order_id <= $2 AND o.tenant_id = $3 ORDER BY i.order_id, i.line",
    )
    .bind(first)
    .bind(last)
    .bind(orders[0].tenant_id)
    .fetch_all(exec)
    .await?;
    for row in &items {
        let order_id: Uuid = row.try_get("order_id")?;
        if let Some(order) = orders.iter_mut().find(|o| o.id == order_id) {
            order.items.push(OrderItem {
                product_id: row.try_get("product_id")?,
                sku: row.try_get("sku")?,
                name: row.try_get("name")?,
                quantity: row.try_get("quantity")?,
                unit_price_cents: row.try_get("unit_price_cents")?,
            });
        }
    }
    Ok(orders)
}

#[async_trait]
impl CommerceStore for SqlStore {
    async fn create_product(&self, tenant: Uuid, input: &ProductInput) -> StoreResult<Product> {
        let at = now();
        let product = Product {
            id: Uuid::now_v7(),
            tenant_id: tenant,
            sku: input.sku.clone().unwrap_or_default(),
            name: input.name.clone().unwrap_or_default(),
            description: input.description.clone().flatten(),
            price_cents: input.price_cents.unwrap_or(0),
            currency: input.currency.clone().unwrap_or_default(),
            stock: input.stock.flatten(),
            active: input.active.unwrap_or(true),
            created_at: at,
            updated_at: at,
        };
        let mut tx = self.write().await?;
        sql("INSERT INTO products (id, tenant_id, sku, name, description, price_cents, currency, stock, \
             active, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)")
        .bind(product.id)
        .bind(tenant)
        .bind(product.sku.as_str())
        .bind(product.name.as_str())
        .bind(product.description.as_deref())
        .bind(product.price_cents)
        .bind(product.currency.as_str())
        .bind(product.stock)
        .bind(product.active)
        .bind(at)
        .execute(&mut tx)
        .await
        .map_err(|err| sku_conflict(err, &product.sku))?;
        tx.commit().await?;
        Ok(product)
    }

    async fn products_page(
        &self,
        scope: TenantScope,
        after: Option<Uuid>,
        limit: u32,
        active: Option<bool>,
    ) -> StoreResult<Vec<Product>> {
        let rows = sql(
            "SELECT * FROM products WHERE ($1 IS NULL OR tenant_id = $1) AND ($2 IS NULL OR id > $2) \
             AND ($3 IS NULL OR active = $3) ORDER BY id LIMIT $4",
        )
        .bind(scope.tenant())
        .bind(after)
        .bind(active)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(product_from_row).collect()
    }

    async fn product(&self, scope: TenantScope, id: Uuid) -> StoreResult<Product> {
        sql("SELECT * FROM products WHERE id = $1 AND ($2 IS NULL OR tenant_id = $2)")
            .bind(id)
            .bind(scope.tenant())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(product_from_row)
            .transpose()?
            .ok_or_else(|| not_found("product", id))
    }

    async fn update_product(
        &self,
        scope: TenantScope,
        id: Uuid,
        input: &ProductInput,
    ) -> StoreResult<Product> {
        let mut tx = self.write().await?;
        let mut product = find_product(&mut tx, scope, id).await?;
        if let Some(sku) = &input.sku {
            product.sku.clone_from(sku);
        }
        if let Some(name) = &input.name {
            product.name.clone_from(name);
        }
        if let Some(description) = &input.description {
            product.description.clone_from(description);
        }
        if let Some(price) = input.price_cents {
            product.price_cents = price;
        }
        if let Some(currency) = &input.currency {
            product.currency.clone_from(currency);
        }
        if let Some(stock) = input.stock {
            product.stock = stock;
        }
        if let Some(active) = input.active {
            product.active = active;
        }
        product.updated_at = now();
        sql("UPDATE products SET sku = $1, name = $2, description = $3, price_cents = $4, currency = $5, \
             stock = $6, active = $7, updated_at = $8 WHERE id = $9")
        .bind(product.sku.as_str())
        .bind(product.name.as_str())
        .bind(product.description.as_deref())
        .bind(product.price_cents)
        .bind(product.currency.as_str())
        .bind(product.stock)
        .bind(product.active)
        .bind(product.updated_at)
        .bind(product.id)
        .execute(&mut tx)
        .await
        .map_err(|err| sku_conflict(err, &product.sku))?;
        tx.commit().await?;
        Ok(product)
    }

    async fn delete_product(&self, scope: TenantScope, id: Uuid) -> StoreResult<Product> {
        let mut tx = self.write().await?;
        let product = find_product(&mut tx, scope, id).await?;
        // Order lines keep their SKU, name and price; they lose only the link.
        sql("DELETE FROM products WHERE id = $1")
            .bind(id)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(product)
    }

    async fn create_seller(&self, tenant: Uuid, input: &SellerInput) -> StoreResult<Seller> {
        let at = now();
        let seller = Seller {
            id: Uuid::now_v7(),
            tenant_id: tenant,
            name: input.name.clone().unwrap_or_default(),
            email: input.email.clone().flatten(),
            phone: input.phone.clone().flatten(),
            active: input.active.unwrap_or(true),
            created_at: at,
            updated_at: at,
        };
        sql("INSERT INTO sellers (id, tenant_id, name, email, phone, active, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)")
        .bind(seller.id)
        .bind(tenant)
        .bind(seller.name.as_str())
        .bind(seller.email.as_deref())
        .bind(seller.phone.as_deref())
        .bind(seller.active)
        .bind(at)
        .write(&self.pool)
        .await?;
        Ok(seller)
    }

    async fn sellers_page(
        &self,
        scope: TenantScope,
        after: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Vec<Seller>> {
        let rows = sql(
            "SELECT * FROM sellers WHERE ($1 IS NULL OR tenant_id = $1) AND ($2 IS NULL OR id > $2) \
             ORDER BY id LIMIT $3",
        )
        .bind(scope.tenant())
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(seller_from_row).collect()
    }

    async fn seller(&self, scope: TenantScope, id: Uuid) -> StoreResult<Seller> {
        sql("SELECT * FROM sellers WHERE id = $1 AND ($2 IS NULL OR tenant_id = $2)")
            .bind(id)
            .bind(scope.tenant())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(seller_from_row)
            .transpose()?
            .ok_or_else(|| not_found("seller", id))
    }

    async fn update_seller(
        &self,
        scope: TenantScope,
        id: Uuid,
        input: &SellerInput,
    ) -> StoreResult<Seller> {
        let mut tx = self.write().await?;
        let mut seller = find_seller(&mut tx, scope, id).await?;
        if let Some(name) = &input.name {
            seller.name.clone_from(name);
        }
        if let Some(email) = &input.email {
            seller.email.clone_from(email);
        }
        if let Some(phone) = &input.phone {
            seller.phone.clone_from(phone);
        }
        if let Some(active) = input.active {
            seller.active = active;
        }
        seller.updated_at = now();
        sql("UPDATE sellers SET name = $1, email = $2, phone = $3, active = $4, updated_at = $5 WHERE id = $6")
            .bind(seller.name.as_str())
            .bind(seller.email.as_deref())
            .bind(seller.phone.as_deref())
            .bind(seller.active)
            .bind(seller.updated_at)
            .bind(seller.id)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(seller)
    }

    async fn create_customer(&self, tenant: Uuid, input: &CustomerInput) -> StoreResult<Customer> {
        let at = now();
        let mut vars = serde_json::Map::new();
        merge_vars(&mut vars, &input.vars.clone().unwrap_or_default());
        let customer = Customer {
            id: Uuid::now_v7(),
            tenant_id: tenant,
            contact: input.contact.clone().unwrap_or_default(),
            name: input.name.clone().flatten(),
            vars,
            seller_id: input.seller_id.flatten(),
            created_at: at,
            updated_at: at,
        };
        let mut tx = self.write().await?;
        check_seller(&mut tx, tenant, customer.seller_id).await?;
        insert_customer(&mut tx, &customer).await?;
        tx.commit().await?;
        Ok(customer)
    }

    async fn customers_page(
        &self,
        scope: TenantScope,
        after: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Vec<Customer>> {
        let rows = sql(
            "SELECT * FROM customers WHERE ($1 IS NULL OR tenant_id = $1) AND ($2 IS NULL OR id > $2) \
             ORDER BY id LIMIT $3",
        )
        .bind(scope.tenant())
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(customer_from_row).collect()
    }

    async fn customer(&self, scope: TenantScope, id: Uuid) -> StoreResult<Customer> {
        sql("SELECT * FROM customers WHERE id = $1 AND ($2 IS NULL OR tenant_id = $2)")
            .bind(id)
            .bind(scope.tenant())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(customer_from_row)
            .transpose()?
            .ok_or_else(|| not_found("customer", id))
    }

    async fn update_customer(
        &self,
        scope: TenantScope,
        id: Uuid,
        input: &CustomerInput,
    ) -> StoreResult<Customer> {
        let mut tx = self.write().await?;
        let mut customer = find_customer(&mut tx, scope, id).await?;
        if let Some(contact) = &input.contact {
            customer.contact.clone_from(contact);
        }
        if let Some(name) = &input.name {
            customer.name.clone_from(name);
        }
        if let Some(vars) = &input.vars {
            merge_vars(&mut customer.vars, vars);
        }
        if let Some(seller) = input.seller_id {
            check_seller(&mut tx, customer.tenant_id, seller).await?;
            customer.seller_id = seller;
        }
        customer.updated_at = now();
        sql("UPDATE customers SET contact = $1, name = $2, vars = $3, seller_id = $4, updated_at = $5 \
             WHERE id = $6")
        .bind(customer.contact.as_str())
        .bind(customer.name.as_deref())
        .bind(Json(&customer.vars))
        .bind(customer.seller_id)
        .bind(customer.updated_at)
        .bind(customer.id)
        .execute(&mut tx)
        .await
        .map_err(|err| match err.as_database_error() {
            Some(db) if db.is_unique_violation() => StoreError::Conflict {
                message: format!("a customer with contact {} already exists", customer.contact),
                field: Some("contact"),
            },
            _ => StoreError::Database(err),
        })?;
        tx.commit().await?;
        Ok(customer)
    }

    async fn create_order(&self, tenant: Uuid, order: &NewOrder) -> StoreResult<Order> {
        let mut tx = self.write().await?;
        let order = insert_order(
            &mut tx,
            tenant,
            None,
            "api",
            order,
            &serde_json::Map::new(),
            now(),
        )
        .await?;
        tx.commit().await?;
        Ok(order)
    }

    async fn orders_page(
        &self,
        scope: TenantScope,
        after: Option<Uuid>,
        limit: u32,
        filter: &OrderFilter,
    ) -> StoreResult<Vec<Order>> {
        let rows = sql(
            "SELECT * FROM orders WHERE ($1 IS NULL OR tenant_id = $1) AND ($2 IS NULL OR id > $2) \
             AND ($3 IS NULL OR status = $3) AND ($4 IS NULL OR customer_id = $4) ORDER BY id LIMIT $5",
        )
        .bind(scope.tenant())
        .bind(after)
        .bind(filter.status.map(OrderStatus::as_str))
        .bind(filter.customer)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        if scope == TenantScope::All {
            // Items are fetched per tenant range: one order at a time across tenants.
            let mut orders = Vec::with_capacity(rows.len());
            for row in rows {
                orders.extend(with_items(&self.pool, vec![row]).await?);
            }
            return Ok(orders);
        }
        with_items(&self.pool, rows).await
    }

    async fn order(&self, scope: TenantScope, id: Uuid) -> StoreResult<Order> {
        let row = sql("SELECT * FROM orders WHERE id = $1 AND ($2 IS NULL OR tenant_id = $2)")
            .bind(id)
            .bind(scope.tenant())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| not_found("order", id))?;
        Ok(with_items(&self.pool, vec![row])
            .await?
            .pop()
            .ok_or_else(|| not_found("order", id))?)
    }

    async fn change_order(
        &self,
        scope: TenantScope,
        id: Uuid,
        change: &OrderChange,
    ) -> StoreResult<Order> {
        let mut tx = self.write().await?;
        let row = sql("SELECT * FROM orders WHERE id = $1 AND ($2 IS NULL OR tenant_id = $2)")
            .bind(id)
            .bind(scope.tenant())
            .locking("FOR UPDATE")
            .fetch_optional(&mut tx)
            .await?
            .ok_or_else(|| not_found("order", id))?;
        let mut order = with_items(&mut tx, vec![row])
            .await?
            .pop()
            .ok_or_else(|| not_found("order", id))?;
        let at = now();
        if let Some(next) = change.status
            && next != order.status
        {
            if !order.status.can_become(next) {
                return Err(StoreError::Conflict {
                    message: format!(
                        "an order that is {} cannot become {next} (pending → confirmed → paid → shipped → delivered, or cancelled before shipping)",
                        order.status
                    ),
                    field: Some("status"),
                });
            }
            if next == OrderStatus::Cancelled {
                for item in &order.items {
                    if let Some(product) = item.product_id {
                        sql("UPDATE products SET stock = stock + $1, updated_at = $2 \
                             WHERE id = $3 AND stock IS NOT NULL")
                        .bind(item.quantity)
                        .bind(at)
                        .bind(product)
                        .execute(&mut tx)
                        .await?;
                    }
                }
            }
            order.status = next;
        }
        if let Some(seller) = change.seller_id {
            check_seller(&mut tx, order.tenant_id, seller).await?;
            order.seller_id = seller;
        }
        if let Some(notes) = &change.notes {
            order.notes.clone_from(notes);
        }
        order.updated_at = at;
        sql("UPDATE orders SET status = $1, seller_id = $2, notes = $3, updated_at = $4 WHERE id = $5")
            .bind(order.status.as_str())
            .bind(order.seller_id)
            .bind(order.notes.as_deref())
            .bind(at)
            .bind(order.id)
            .execute(&mut tx)
            .await?;
        append_event(
            &mut tx,
            order.tenant_id,
            "order.updated",
            &order_event(&order),
            at,
        )
        .await?;
        tx.commit().await?;
        Ok(order)
    }
}
