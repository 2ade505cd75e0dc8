//! Python's "Pipes" example: a child sends a message through one end of a pipe, the parent
//! receives it at the other; then a simplex pipe that a child writes until it is done, and a
//! duplex conversation.
//!
//! ```text
//! (42, None, "hello")
//! squares: [0, 1, 4, 9, 16]
//! child says: HELLO, PIPE
//! ```
use multiproc::{process, Connection, Pipe, Process, Sender};

#[process]
fn f(conn: Connection<(i32, Option<i32>, String), ()>) {
    conn.send((42, None, "hello".to_string())).expect("send");
    conn.close();
}

#[process]
fn squares(tx: Sender<u64>, n: u64) {
    for i in 0..n {
        tx.send(i * i).expect("send");
    }
    // Returning drops `tx`: the reader's iterator ends.
}

#[process]
fn shout(conn: Connection<String, String>) {
    while let Ok(text) = conn.recv() {
        if conn.send(text.to_uppercase()).is_err() {
            break;
        }
    }
}

#[multiproc::main]
fn main() -> multiproc::Result<()> {
    // parent_conn, child_conn = Pipe()
    let (parent_conn, child_conn) = Pipe::<(), (i32, Option<i32>, String)>::duplex()?;
    let p = Process::new(f, child_conn); // moving the end closes the parent's copy
    p.start()?;
    println!("{:?}", parent_conn.recv()?);
    p.join()?;

    // reader, writer = Pipe(duplex=False)
    let (reader, writer) = Pipe::<u64>::simplex()?;
    let p = Process::new(squares, (writer, 5));
    p.start()?;
    let all: Vec<u64> = reader.collect::<multiproc::Result<_>>()?;
    println!("squares: {all:?}");
    p.join()?;

    let (mine, theirs) = Pipe::<String, String>::duplex()?;
    let p = Process::new(shout, theirs);
    p.start()?;
    mine.send("hello, pipe".to_string())?;
    println!("child says: {}", mine.recv()?);
    drop(mine); // the child's recv fails with Disconnected, and it returns
    p.join()?;
    Ok(())
}
