//! `codec = "..."`: the default named, and the self-describing one, with a shape only it
//! carries (an untagged enum), beside `name` and `crate`.

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Loose {
    Number(i64),
    Text(String),
}

#[multiproc::process(codec = "msgpack")]
fn describe(l: Loose) -> String {
    match l {
        Loose::Number(n) => n.to_string(),
        Loose::Text(t) => t,
    }
}

#[multiproc::process(name = "ui::bytes", codec = "msgpack", crate = "::multiproc")]
fn bytes(v: Vec<u8>, n: u32) -> Vec<u8> {
    v.into_iter().take(n as usize).collect()
}

#[multiproc::process(codec = "bincode")]
fn square(n: u64) -> u64 {
    n * n
}

fn main() {
    assert_eq!(describe(Loose::Number(3)), "3");
    assert_eq!(describe(Loose::Text("x".into())), "x");
    assert_eq!(bytes(vec![1, 2, 3], 2), [1, 2]);
    assert_eq!(square(4), 16);
}
