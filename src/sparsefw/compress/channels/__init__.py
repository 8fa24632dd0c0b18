"""Channel removal machinery behind `remove_filters`: capture → dependency groups → per-op rules →
surgery, one module each."""
