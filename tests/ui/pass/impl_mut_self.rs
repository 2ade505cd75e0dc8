// The subclass style with `fn run(&mut self)`; other items stay untouched.
use multiproc::{process, Runnable};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct MyProcess {
    id: u32,
}

#[process]
impl MyProcess {
    fn run(&mut self) {
        self.id += 1;
        self.helper();
    }

    fn helper(&self) {
        assert_eq!(self.id, 2);
    }

    #[allow(dead_code)]
    const ANSWER: u32 = 42;
}

fn main() {
    assert_eq!(<MyProcess as Runnable>::TYPE_NAME, "MyProcess");
    assert_eq!(
        <MyProcess as Runnable>::NAME,
        concat!(module_path!(), "::MyProcess")
    );
    MyProcess { id: 1 }.run_process();
    let mut p = MyProcess { id: 1 };
    p.run();
    assert_eq!(p.id, 2);
}
