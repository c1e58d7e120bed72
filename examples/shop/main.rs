//! A shop of three services: `orders` charges through `payments` by RPC and
//! tells `emails` by event. Two instances each of `payments` and `emails`
//! share the work round robin. The second of three orders is over the limit:
//! its decline reaches the caller through `orders` with its type intact.
//!
//! ```text
//! cargo run --example shop
//! ```

use serde::{Deserialize, Serialize};
use shimeji::prelude::*;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The most `payments` charges at once, in cents.
const LIMIT_CENTS: u64 = 50_000;

/// Why `payments` refused a charge. Each variant's name is its `exc_type`.
#[derive(Debug, thiserror::Error, Exception)]
enum PaymentError {
    /// The amount is over the limit.
    #[error("card declined: {amount_cents} cents is over the limit of {limit_cents}")]
    Declined { amount_cents: u64, limit_cents: u64 },
    /// There is nothing to charge.
    #[error("cannot charge {0} cents")]
    InvalidAmount(u64),
}

/// Charges cards. Each instance has a number, to show which one served a call.
#[derive(Dependencies)]
struct Payments {
    instance: u8,
}

#[service(name = "payments")]
impl Payments {
    /// Charges `amount_cents` for order `order_id`; returns a receipt id.
    #[rpc]
    async fn charge(&self, order_id: u64, amount_cents: u64) -> Result<String, PaymentError> {
        let instance = self.instance;
        println!("  payments#{instance}: charging {amount_cents} cents for order {order_id}");
        match amount_cents {
            0 => Err(PaymentError::InvalidAmount(amount_cents)),
            over if over > LIMIT_CENTS => Err(PaymentError::Declined {
                amount_cents,
                limit_cents: LIMIT_CENTS,
            }),
            _ => Ok(format!("rcpt-{order_id}-p{instance}")),
        }
    }
}

/// The `order_placed` event's payload.
#[derive(Debug, Serialize, Deserialize)]
struct OrderPlaced {
    order_id: u64,
    receipt: String,
    email: String,
}

/// Takes orders: charges through `payments`, then tells whoever listens.
#[derive(Default, Dependencies)]
struct Orders {
    /// Typed client for `payments`, bound when `orders` starts.
    payments: PaymentsClient,
    /// Dispatches events as `orders`.
    events: EventDispatcher,
}

#[service(name = "orders", events = ["order_placed"])]
impl Orders {
    /// Places an order: charges it, then dispatches `order_placed`. Errors
    /// pass on as they came (`RemoteError` is an `Exception` itself), so the
    /// caller sees a decline as `Declined`.
    #[rpc]
    async fn place_order(
        &self,
        order_id: u64,
        amount_cents: u64,
        email: String,
    ) -> Result<String, RemoteError> {
        let receipt = match self.payments.charge(order_id, amount_cents).await {
            Ok(receipt) => receipt,
            Err(err) => {
                println!(
                    "  orders: the charge failed ({}): passed on",
                    err.exc_type()
                );
                return Err(err.to_remote());
            }
        };
        println!("  orders: order {order_id} paid, dispatching order_placed");
        let event = OrderPlaced {
            order_id,
            receipt: receipt.clone(),
            email,
        };
        self.events.dispatch("order_placed", event).await?;
        Ok(receipt)
    }
}

/// An email `emails` sent, with the call id stack its handler ran under.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Email {
    to: String,
    subject: String,
    sent_by: String,
    call_id_stack: Vec<String>,
}

/// Sends order confirmations. The instances share one outbox (a stand-in for
/// a database), so `sent()` answers the same whichever instance takes it.
#[derive(Dependencies)]
struct Emails {
    instance: u8,
    outbox: Arc<Mutex<Vec<Email>>>,
}

#[service(name = "emails")]
impl Emails {
    /// Handles `order_placed` from `orders`; with the default handler type
    /// (`service_pool`) one instance of `emails` gets each event.
    #[event_handler("orders", "order_placed")]
    async fn confirm(&self, event: OrderPlaced) {
        let context = shimeji::context::current();
        let email = Email {
            to: event.email,
            subject: format!("Order {} confirmed ({})", event.order_id, event.receipt),
            sent_by: format!("emails#{}", self.instance),
            call_id_stack: context.map(|c| c.call_id_stack()).unwrap_or_default(),
        };
        self.outbox().push(email);
    }

    /// Every email sent so far, by any instance.
    #[rpc]
    async fn sent(&self) -> Vec<Email> {
        self.outbox().clone()
    }

    /// The shared outbox, locked.
    fn outbox(&self) -> MutexGuard<'_, Vec<Email>> {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();

    // Add a service twice for two instances; both `emails` share one outbox.
    let outbox = Arc::default();
    let emails = |instance| Emails {
        instance,
        outbox: Arc::clone(&outbox),
    };
    let running = ServiceRunner::new()
        .service(Orders::default())
        .service(Payments { instance: 1 })
        .service(Payments { instance: 2 })
        .service(emails(1))
        .service(emails(2))
        .start()
        .await?;
    let transport = running.transport().name();
    println!("The shop opens on the {transport} transport: orders, 2 x payments, 2 x emails.");

    let orders: OrdersClient = running.client();
    let basket = [
        (1, 1_999, "ada@example.com"),
        (2, 120_000, "bob@example.com"),
        (3, 4_500, "cy@example.com"),
    ];
    for (order_id, amount_cents, email) in basket {
        println!("\n{email} places order {order_id} for {amount_cents} cents.");
        // Made before the order is placed, so it cannot miss the event.
        let confirmed = running.entrypoint_waiter("emails", "confirm");
        let placed = orders.place_order(order_id, amount_cents, email.into());
        match placed.await {
            Ok(receipt) => {
                println!("  -> placed, receipt {receipt}");
                let finished = confirmed.wait(Duration::from_secs(5)).await?;
                println!("  -> confirmation sent by worker {}", finished.call_id);
            }
            Err(err) if err.is("Declined") => {
                let why = err.remote().map_or("", |e| e.value.as_str());
                println!("  -> refused, exc_type {:?}: {why}", err.exc_type());
                println!("  -> err.is(\"Declined\") is true; no email goes out");
            }
            Err(err) => return Err(err.into()),
        }
    }

    println!("\nWhat emails sent:");
    let emails: EmailsClient = running.client();
    for email in emails.sent().await? {
        println!("  {} to {}: {:?}", email.sent_by, email.to, email.subject);
        println!("    call id stack, oldest first:");
        for call_id in &email.call_id_stack {
            println!("      {call_id}");
        }
    }

    running.stop().await;
    println!("\nThe shop is closed.");
    Ok(())
}
