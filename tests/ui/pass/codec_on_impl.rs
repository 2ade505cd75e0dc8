//! `codec = "..."` on an impl block: the process type's value travels in that format, here a
//! type only a self-describing one carries (an untagged enum field); the default, named.

use multiproc::Runnable;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Loose {
    Number(i64),
    Text(String),
}

#[derive(Serialize, Deserialize)]
struct Job {
    id: u32,
    loose: Loose,
}

#[multiproc::process(codec = "msgpack")]
impl Job {
    fn run(&mut self) {
        assert_eq!(self.id, 1);
        assert!(matches!(self.loose, Loose::Text(ref t) if t == "x"));
    }
}

#[derive(Serialize, Deserialize)]
struct Plain(u8);

#[multiproc::process(name = "ui::Plain", codec = "bincode", crate = "::multiproc")]
impl Plain {
    fn run(self) {
        assert_eq!(self.0, 2);
    }
}

fn main() {
    let format = std::any::type_name::<<Job as Runnable>::Format>();
    assert!(format.ends_with("SelfDescribing"), "{format}");
    let format = std::any::type_name::<<Plain as Runnable>::Format>();
    assert!(format.ends_with("Compact"), "{format}");
    Job {
        id: 1,
        loose: Loose::Text("x".into()),
    }
    .run_process();
    Plain(2).run_process();
}
