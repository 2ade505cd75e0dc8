// Functions with 0, 1, 3 and 12 arguments stay callable and implement `Target`.
use multiproc::{process, Target};

fn args_of<T: Target>(_: T) -> std::marker::PhantomData<T::Args> {
    std::marker::PhantomData
}

fn same<A>(_: std::marker::PhantomData<A>, _: std::marker::PhantomData<A>) {}

#[process]
fn zero() -> u8 {
    7
}

#[process]
fn one(n: u64) -> u64 {
    n * n
}

#[process]
pub fn three(a: i64, b: String, c: Vec<u8>) -> (i64, usize) {
    (a, b.len() + c.len())
}

#[process]
#[allow(clippy::too_many_arguments)]
fn twelve(
    a: u8,
    b: u8,
    c: u8,
    d: u8,
    e: u8,
    f: u8,
    g: u8,
    h: u8,
    i: u8,
    j: u8,
    k: u8,
    l: u8,
) -> u32 {
    [a, b, c, d, e, f, g, h, i, j, k, l]
        .iter()
        .map(|&x| u32::from(x))
        .sum()
}

/// No return type.
#[process]
fn nothing(_flag: bool) {}

fn main() {
    assert_eq!(zero(), 7);
    assert_eq!(one(3), 9);
    assert_eq!(three(1, "ab".to_string(), vec![1]), (1, 3));
    assert_eq!(twelve(1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1), 12);
    nothing(true);

    // `Args`: `()` for none, the type itself for one, a tuple for several.
    same(args_of(zero), std::marker::PhantomData::<()>);
    same(args_of(one), std::marker::PhantomData::<u64>);
    same(
        args_of(three),
        std::marker::PhantomData::<(i64, String, Vec<u8>)>,
    );
    same(args_of(nothing), std::marker::PhantomData::<bool>);

    // `call` unpacks them.
    assert_eq!(<zero as Target>::call(()), 7);
    assert_eq!(<one as Target>::call(4), 16);
    assert_eq!(<three as Target>::call((2, "x".into(), vec![])), (2, 1));
    assert_eq!(
        <twelve as Target>::call((1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)),
        78
    );
    <nothing as Target>::call(false);

    // The default name is `module::path::ident`.
    assert_eq!(<one as Target>::NAME, concat!(module_path!(), "::one"));
    assert_eq!(
        <twelve as Target>::NAME,
        concat!(module_path!(), "::twelve")
    );

    // A value: `Copy`, and derefs to a plain function pointer.
    let w = one;
    let copy = w;
    let f: fn(u64) -> u64 = *w;
    assert_eq!(f(5) + copy(1), 26);
}
