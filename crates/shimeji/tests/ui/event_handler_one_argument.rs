use shimeji::prelude::*;

struct Audit;

#[service(name = "audit")]
impl Audit {
    #[event_handler("greeter")]
    async fn on_greeted(&self, payload: serde_json::Value) {
        let _ = payload;
    }
}

fn main() {}
