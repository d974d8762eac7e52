//! A tenant's business data: its catalogue (products), customers, sellers (its staff who
//! own orders and customers) and orders with their items. Money is in minor units of the
//! currency (cents): `1250` with `"ARS"` is 12.50 pesos. Order states move forward along
//! pending → confirmed → paid → shipped → delivered, or to cancelled before shipping.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ValidationError;
use crate::validate;

/// A product of the catalogue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// Unique within the tenant; what flows and integrations name it by.
    pub sku: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub price_cents: i64,
    /// ISO 4217 code, e.g. `ARS`.
    pub currency: String,
    /// Units in stock; absent: not counted (never runs out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stock: Option<i64>,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Creating a product, or (every field optional) changing one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductInput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `null` clears it on a change.
    #[serde(
        default,
        deserialize_with = "crate::api::present_or_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub description: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_cents: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// `null`: not counted.
    #[serde(
        default,
        deserialize_with = "crate::api::present_or_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub stock: Option<Option<i64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
}

impl ProductInput {
    /// Checks the fields present; `creating` requires sku, name, price and currency.
    pub fn validated(&self, creating: bool) -> Result<ProductInput, ValidationError> {
        if creating {
            for (field, missing) in [
                ("sku", self.sku.is_none()),
                ("name", self.name.is_none()),
                ("price_cents", self.price_cents.is_none()),
                ("currency", self.currency.is_none()),
            ] {
                if missing {
                    return Err(ValidationError::new(field, "required for a new product"));
                }
            }
        } else if self == &ProductInput::default() {
            return Err(ValidationError::new("body", "nothing to change"));
        }
        let mut out = self.clone();
        if let Some(sku) = &self.sku {
            out.sku = Some(sku_value("sku", sku)?);
        }
        if let Some(name) = &self.name {
            out.name = Some(validate::display_name("name", name)?);
        }
        if let Some(Some(text)) = &self.description
            && text.chars().count() > 2000
        {
            return Err(ValidationError::new(
                "description",
                "at most 2000 characters",
            ));
        }
        if self
            .price_cents
            .is_some_and(|p| !(0..=MAX_CENTS).contains(&p))
        {
            return Err(ValidationError::new(
                "price_cents",
                "a price is 0 or more minor units (cents), at most 10^13",
            ));
        }
        if let Some(currency) = &self.currency {
            out.currency = Some(currency_code("currency", currency)?);
        }
        if let Some(Some(stock)) = self.stock
            && stock < 0
        {
            return Err(ValidationError::new(
                "stock",
                "stock is 0 or more (null: not counted)",
            ));
        }
        Ok(out)
    }
}

/// Largest amount in minor units (10^13: enough for any order, far from overflow).
pub const MAX_CENTS: i64 = 10_000_000_000_000;

fn sku_value(field: &str, value: &str) -> Result<String, ValidationError> {
    let value = value.trim();
    if value.is_empty()
        || value.len() > 64
        || !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(ValidationError::new(
            field,
            "a SKU is 1 to 64 characters from A-Z, a-z, 0-9, '-', '_' and '.'",
        ));
    }
    Ok(value.to_owned())
}

/// An ISO 4217 code in upper case.
pub fn currency_code(field: &str, value: &str) -> Result<String, ValidationError> {
    let code = value.trim().to_ascii_uppercase();
    if code.len() == 3 && code.chars().all(|c| c.is_ascii_uppercase()) {
        Ok(code)
    } else {
        Err(ValidationError::new(
            field,
            "a currency is a 3-letter ISO 4217 code, like ARS or USD",
        ))
    }
}

/// Someone who bought or talks to a tenant's bots: one per tenant and contact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// The contact as the bots know it (an E.164 phone, or another WhatsApp identifier).
    pub contact: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Variables captured by flows (the latest value of each), and any set by the API.
    pub vars: serde_json::Map<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seller_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Creating a customer, or changing one (every field optional).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerInput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    #[serde(
        default,
        deserialize_with = "crate::api::present_or_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub name: Option<Option<String>>,
    /// Merged into the stored variables (`null` values remove a variable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vars: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(
        default,
        deserialize_with = "crate::api::present_or_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub seller_id: Option<Option<Uuid>>,
}

impl CustomerInput {
    pub fn validated(&self, creating: bool) -> Result<CustomerInput, ValidationError> {
        let mut out = self.clone();
        match (&self.contact, creating) {
            (Some(contact), _) => out.contact = Some(validate::contact_id("contact", contact)?),
            (None, true) => {
                return Err(ValidationError::new(
                    "contact",
                    "required for a new customer",
                ));
            }
            (None, false) => {}
        }
        if !creating && self == &CustomerInput::default() {
            return Err(ValidationError::new("body", "nothing to change"));
        }
        if let Some(Some(name)) = &self.name {
            out.name = Some(Some(validate::display_name("name", name)?));
        }
        if self
            .vars
            .as_ref()
            .is_some_and(|vars| serde_json::to_string(vars).map_or(true, |s| s.len() > 64 * 1024))
        {
            return Err(ValidationError::new(
                "vars",
                "variables take at most 64 KiB of JSON",
            ));
        }
        Ok(out)
    }
}

/// A member of a tenant's sales staff.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seller {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Creating a seller, or changing one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SellerInput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(
        default,
        deserialize_with = "crate::api::present_or_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub email: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "crate::api::present_or_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub phone: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
}

impl SellerInput {
    pub fn validated(&self, creating: bool) -> Result<SellerInput, ValidationError> {
        let mut out = self.clone();
        match (&self.name, creating) {
            (Some(name), _) => out.name = Some(validate::display_name("name", name)?),
            (None, true) => return Err(ValidationError::new("name", "required for a new seller")),
            (None, false) if self == &SellerInput::default() => {
                return Err(ValidationError::new("body", "nothing to change"));
            }
            (None, false) => {}
        }
        if let Some(Some(email)) = &self.email {
            out.email = Some(Some(crate::access::email("email", email)?));
        }
        if let Some(Some(phone)) = &self.phone {
            out.phone = Some(Some(validate::phone("phone", phone)?));
        }
        Ok(out)
    }
}

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    Pending,
    Confirmed,
    Paid,
    Shipped,
    Delivered,
    Cancelled,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 6] = [
        OrderStatus::Pending,
        OrderStatus::Confirmed,
        OrderStatus::Paid,
        OrderStatus::Shipped,
        OrderStatus::Delivered,
        OrderStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "pending",
            OrderStatus::Confirmed => "confirmed",
            OrderStatus::Paid => "paid",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Delivered => "delivered",
            OrderStatus::Cancelled => "cancelled",
        }
    }

    /// Whether an order may move from `self` to `next`: one step forward, or to
    /// cancelled before it ships.
    pub fn can_become(self, next: OrderStatus) -> bool {
        use OrderStatus::*;
        matches!(
            (self, next),
            (Pending, Confirmed)
                | (Confirmed, Paid)
                | (Paid, Shipped)
                | (Shipped, Delivered)
                | (Pending | Confirmed | Paid, Cancelled)
        )
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OrderStatus {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        OrderStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == value)
            .ok_or_else(|| format!("unknown order status {value:?}"))
    }
}

/// An order with its items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// The bot whose conversation created it, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_id: Option<Uuid>,
    pub customer_id: Uuid,
    pub contact: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seller_id: Option<Uuid>,
    pub status: OrderStatus,
    pub currency: String,
    pub total_cents: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// `flow` or `api`.
    pub source: String,
    pub items: Vec<OrderItem>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One line of an order, with the price it was sold at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderItem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    pub name: String,
    pub quantity: i64,
    pub unit_price_cents: i64,
}

/// Creating an order (`POST /api/v1/orders`, or a flow's `create_order` action).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrder {
    /// The customer's contact; the customer is created if new.
    pub contact: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_name: Option<String>,
    pub items: Vec<NewOrderItem>,
    /// Defaults to the products' currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seller_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

/// An order line: a catalogue product by `sku` (its price), or a free line with `name`
/// and `unit_price_cents`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrderItem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_price_cents: Option<i64>,
    #[serde(default = "one")]
    pub quantity: i64,
}

fn one() -> i64 {
    1
}

/// Most lines in one order.
pub const MAX_ORDER_ITEMS: usize = 100;

impl NewOrder {
    pub fn validated(&self) -> Result<NewOrder, ValidationError> {
        let contact = validate::contact_id("contact", &self.contact)?;
        if self.items.is_empty() || self.items.len() > MAX_ORDER_ITEMS {
            return Err(ValidationError::new(
                "items",
                format!("an order has 1 to {MAX_ORDER_ITEMS} items"),
            ));
        }
        let mut items = Vec::with_capacity(self.items.len());
        for (n, item) in self.items.iter().enumerate() {
            let field = format!("items[{n}]");
            if !(1..=1_000_000).contains(&item.quantity) {
                return Err(ValidationError::new(
                    format!("{field}.quantity"),
                    "a quantity is 1 to 1000000",
                ));
            }
            let sku = item
                .sku
                .as_deref()
                .map(|sku| sku_value(&format!("{field}.sku"), sku))
                .transpose()?;
            let name = item
                .name
                .as_deref()
                .map(|name| validate::display_name(&format!("{field}.name"), name))
                .transpose()?;
            if sku.is_none() && (name.is_none() || item.unit_price_cents.is_none()) {
                return Err(ValidationError::new(
                    field,
                    "name a catalogue product by sku, or give a name and unit_price_cents",
                ));
            }
            if item
                .unit_price_cents
                .is_some_and(|p| !(0..=MAX_CENTS).contains(&p))
            {
                return Err(ValidationError::new(
                    format!("{field}.unit_price_cents"),
                    "a price is 0 or more minor units, at most 10^13",
                ));
            }
            items.push(NewOrderItem {
                sku,
                name,
                unit_price_cents: item.unit_price_cents,
                quantity: item.quantity,
            });
        }
        let currency = self
            .currency
            .as_deref()
            .map(|c| currency_code("currency", c))
            .transpose()?;
        let customer_name = self
            .customer_name
            .as_deref()
            .map(|n| validate::display_name("customer_name", n))
            .transpose()?;
        if self
            .notes
            .as_ref()
            .is_some_and(|n| n.chars().count() > 2000)
        {
            return Err(ValidationError::new("notes", "at most 2000 characters"));
        }
        Ok(NewOrder {
            contact,
            customer_name,
            items,
            currency,
            seller_id: self.seller_id,
            notes: self.notes.clone(),
        })
    }
}

/// Changing an order: its status (along [`OrderStatus::can_become`]), seller or notes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<OrderStatus>,
    #[serde(
        default,
        deserialize_with = "crate::api::present_or_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub seller_id: Option<Option<Uuid>>,
    #[serde(
        default,
        deserialize_with = "crate::api::present_or_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub notes: Option<Option<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_move_forward_or_get_cancelled_before_shipping() {
        use OrderStatus::*;
        assert!(Pending.can_become(Confirmed));
        assert!(Shipped.can_become(Delivered));
        assert!(Paid.can_become(Cancelled));
        assert!(!Shipped.can_become(Cancelled));
        assert!(!Delivered.can_become(Pending));
        assert!(!Pending.can_become(Paid));
        assert!(!Cancelled.can_become(Pending));
        for status in OrderStatus::ALL {
            assert_eq!(status.as_str().parse::<OrderStatus>(), Ok(status));
        }
    }

    #[test]
    fn new_orders_are_checked() {
        let order = |items: Vec<NewOrderItem>| NewOrder {
            contact: "+5491100000001".into(),
            customer_name: None,
            items,
            currency: Some("ars".into()),
            seller_id: None,
            notes: None,
        };
        let by_sku = NewOrderItem {
            sku: Some("PIZZA-M".into()),
            name: None,
            unit_price_cents: None,
            quantity: 2,
        };
        let valid = order(vec![by_sku.clone()]).validated().unwrap();
        assert_eq!(valid.currency.as_deref(), Some("ARS"));
        assert!(order(vec![]).validated().is_err());
        let free_without_price = NewOrderItem {
            sku: None,
            name: Some("Extra".into()),
            unit_price_cents: None,
            quantity: 1,
        };
        assert!(order(vec![free_without_price]).validated().is_err());
        let zero = NewOrderItem {
            quantity: 0,
            ..by_sku
        };
        assert_eq!(
            order(vec![zero]).validated().unwrap_err().field,
            "items[0].quantity"
        );
    }

    #[test]
    fn products_need_their_fields_when_created() {
        let input = ProductInput {
            sku: Some("PIZZA-M".into()),
            name: Some("Pizza".into()),
            price_cents: Some(1250),
            currency: Some("usd".into()),
            ..Default::default()
        };
        assert_eq!(
            input.validated(true).unwrap().currency.as_deref(),
            Some("USD")
        );
        let no_price = ProductInput {
            price_cents: None,
            ..input.clone()
        };
        assert_eq!(no_price.validated(true).unwrap_err().field, "price_cents");
        assert!(ProductInput::default().validated(false).is_err());
        let negative = ProductInput {
            stock: Some(Some(-1)),
            ..input
        };
        assert!(negative.validated(true).is_err());
    }
}

#[cfg(test)]
mod null_tests {
    use super::*;

    #[test]
    fn null_clears_and_absence_keeps() {
        let cleared: ProductInput = serde_json::from_str(r#"{"stock": null}"#).unwrap();
        assert_eq!(cleared.stock, Some(None));
        let kept: ProductInput = serde_json::from_str(r#"{"name": "x"}"#).unwrap();
        assert_eq!(kept.stock, None);
        let unassigned: OrderChange = serde_json::from_str(r#"{"seller_id": null}"#).unwrap();
        assert_eq!(unassigned.seller_id, Some(None));
    }
}
