use shimeji::prelude::*;

struct Audit;

#[service(name = "audit")]
impl Audit {
    #[event_handler("greeter", "greeted")]
    async fn on_greeted(&self, name: String, greeting: String) {
        let _ = (name, greeting);
    }
}

fn main() {}
