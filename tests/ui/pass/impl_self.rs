// The subclass style with `fn run(self)` and `fn run(&self)`, a path self type, and `name`.
use multiproc::{process, Runnable};
use serde::{Deserialize, Serialize};

mod types {
    #[derive(serde::Serialize, serde::Deserialize)]
    pub struct Consumed {
        pub words: Vec<String>,
    }
}

#[process]
impl types::Consumed {
    fn run(self) {
        assert_eq!(self.words.len(), 2);
    }
}

#[derive(Serialize, Deserialize)]
struct Borrowed(u8);

#[process(name = "stable::Borrowed")]
impl Borrowed {
    fn run(&self) {
        assert_eq!(self.0, 3);
    }
}

fn main() {
    assert_eq!(<types::Consumed as Runnable>::TYPE_NAME, "Consumed");
    types::Consumed {
        words: vec!["a".into(), "b".into()],
    }
    .run_process();
    assert_eq!(<Borrowed as Runnable>::NAME, "stable::Borrowed");
    assert_eq!(<Borrowed as Runnable>::TYPE_NAME, "Borrowed");
    Borrowed(3).run_process();
}
