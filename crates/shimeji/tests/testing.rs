//! The test helpers: one worker with replaced dependencies, a test cluster,
//! entrypoint waiters.

use serde_json::json;
use shimeji::prelude::*;
use shimeji::testing;
use std::time::Duration;

#[derive(Debug, thiserror::Error, Exception)]
enum OrderError {
    #[error("payment failed: {0}")]
    Payment(#[from] CallError),
    #[error(transparent)]
    Dispatch(#[from] DispatchError),
}

#[derive(Default, Dependencies)]
struct Payments;

#[service(name = "payments")]
impl Payments {
    #[rpc]
    async fn charge(&self, amount: u64) -> String {
        format!("receipt-{amount}")
    }
}

#[derive(Default, Dependencies)]
struct Orders {
    payments: PaymentsClient,
    events: EventDispatcher,
}

#[service(name = "orders")]
impl Orders {
    #[rpc]
    async fn place(&self, amount: u64) -> Result<String, OrderError> {
        let receipt = self.payments.charge(amount).await?;
        self.events
            .dispatch("placed", json!({ "receipt": receipt }))
            .await?;
        Ok(receipt)
    }
}

#[tokio::test]
async fn one_worker_with_replaced_dependencies_in_five_lines() {
    let payments = testing::stub_client(|_method, body| {
        Ok(json!(format!("stub-{}", body["kwargs"]["amount"])))
    });
    let worker = testing::worker(Orders {
        payments,
        events: EventDispatcher::recording(),
    })
    .await
    .unwrap();
    let receipt = worker.client::<OrdersClient>().place(7).await.unwrap();
    assert_eq!(receipt, "stub-7");
    assert_eq!(
        worker.service().events.recorded(),
        vec![("placed".to_string(), json!({"receipt": "stub-7"}))]
    );
}

#[tokio::test]
async fn a_stub_can_fail_like_the_real_service() {
    let payments = testing::stub_client(|_, _| {
        Err(RemoteError::new(
            "Declined",
            "payments.Declined",
            "no funds",
        ))
    });
    let worker = testing::worker(Orders {
        payments,
        events: EventDispatcher::recording(),
    })
    .await
    .unwrap();
    let err = worker.call("place", json!([7])).await.unwrap_err();
    // The orders service wraps the payment error in its own type.
    assert!(err.is("Payment"), "{err:?}");
    assert!(err.remote().unwrap().value.contains("no funds"));
    assert!(worker.service().events.recorded().is_empty());
}

#[tokio::test]
async fn a_test_cluster_runs_several_services_and_waits_for_events() {
    #[derive(Default, Dependencies)]
    struct Audit;
    #[service(name = "audit")]
    impl Audit {
        #[event_handler("orders", "placed")]
        async fn record(&self, event: serde_json::Value) -> Result<(), RemoteError> {
            match event["receipt"].as_str() {
                Some(_) => Ok(()),
                None => Err(RemoteError::new(
                    "NoReceipt",
                    "audit.NoReceipt",
                    "no receipt",
                )),
            }
        }
    }
    let cluster = ServiceRunner::with_config(Config::new())
        .service(Orders::default())
        .service(Payments)
        .service(Audit)
        .start()
        .await
        .unwrap();
    let recorded = cluster.entrypoint_waiter("audit", "record");
    let receipt = cluster.client::<OrdersClient>().place(12).await.unwrap();
    assert_eq!(receipt, "receipt-12");
    let finished = recorded.wait(Duration::from_secs(2)).await.unwrap();
    assert_eq!((finished.service, finished.entrypoint), ("audit", "record"));
    assert!(finished.result.is_ok());
    assert!(finished.call_id.starts_with("audit.record."));

    // A waiter that sees nothing times out with a clear error.
    let idle = cluster.entrypoint_waiter("audit", "record");
    let err = idle.wait(Duration::from_millis(50)).await.unwrap_err();
    assert_eq!(err.to_string(), "`audit.record` did not finish within 50ms");
    cluster.stop().await;
}

#[tokio::test]
async fn an_unset_dependency_says_what_to_do() {
    let orders = Orders::default();
    let err = orders.payments.charge(1).await.unwrap_err();
    assert!(err.to_string().contains("not set up"), "{err}");
    let err = orders.events.dispatch("x", json!({})).await.unwrap_err();
    assert!(err.to_string().contains("derives `Dependencies`"), "{err}");
}
