/** `T` with its fields writable (distributes over a union): for objects a function made and may still grow in place before handing them out. */
export type Mutable<T> = { -readonly [K in keyof T]: T[K] };
