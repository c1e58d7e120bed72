use shimeji::prelude::*;

// Missing: `#[derive(Dependencies)]`, which every service struct needs.
struct Greeter;

#[service(name = "greeter")]
impl Greeter {
    #[rpc]
    async fn hello(&self, name: String) -> String {
        format!("Hello, {name}!")
    }
}

fn main() {}
