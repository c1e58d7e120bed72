use shimeji::prelude::*;

#[derive(Default, Dependencies)]
struct Users;

#[service(name = "users")]
impl Users {
    #[rpc]
    async fn count(&self) -> u32 {
        0
    }

    #[http(GET, "/users/count")]
    async fn count_http(&self) -> String {
        String::from("0")
    }

    #[http(POST, "/users")]
    async fn add(&self) -> String {
        String::from("added")
    }
}

fn main() {}
