use shimeji::prelude::*;

trait Greet {
    async fn hello(&self, name: String) -> String;
}

struct Greeter;

#[service(name = "greeter")]
impl Greet for Greeter {
    #[rpc]
    async fn hello(&self, name: String) -> String {
        format!("Hello, {name}!")
    }
}

fn main() {}
