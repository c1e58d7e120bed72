use shimeji::prelude::*;

struct Greeter;

#[service(name = "a.b")]
impl Greeter {
    #[rpc]
    async fn hello(&self, name: String) -> String {
        format!("Hello, {name}!")
    }
}

fn main() {}
