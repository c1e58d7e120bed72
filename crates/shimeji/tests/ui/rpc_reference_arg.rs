use shimeji::prelude::*;

struct Greeter;

#[service(name = "greeter")]
impl Greeter {
    #[rpc]
    async fn hello(&self, name: &str) -> String {
        format!("Hello, {name}!")
    }
}

fn main() {}
