/**
 * SlotSet: the set of in-flight items that allocates nothing once grown. It is
 * checked against a JS Set over random adds and deletes (membership, size,
 * every item reachable by index exactly once), and for the edges: deleting
 * what is not there, adding twice, an item moving between sets.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SlotSet, type Slotted } from '../../../src/util/slot-set.js';

interface Item extends Slotted {
  readonly id: number;
}

const item = (id: number): Item => ({ id, slot: -1 });

function contents(s: SlotSet<Item>): number[] {
  const ids: number[] = [];
  for (let i = 0; i < s.size; i++) ids.push(s.at(i).id);
  return ids.sort((a, b) => a - b);
}

test('random adds and deletes keep the same members as a Set, each reachable by index once', () => {
  const items = Array.from({ length: 64 }, (_, i) => item(i));
  const model = new Set<Item>();
  const s = new SlotSet<Item>();
  let x = 12345;
  for (let step = 0; step < 20000; step++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    const it = items[x % items.length] as Item;
    if ((x >>> 16) % 3 === 0) {
      assert.equal(s.delete(it), model.delete(it));
    } else {
      s.add(it);
      model.add(it);
    }
    assert.equal(s.size, model.size);
    if (step % 97 === 0) {
      assert.deepEqual(contents(s), [...model].map((m) => m.id).sort((a, b) => a - b));
      for (const m of items) assert.equal(s.has(m), model.has(m));
    }
  }
});

test('deleting an item that is not in the set changes nothing; adding twice keeps one', () => {
  const s = new SlotSet<Item>();
  const a = item(1);
  const b = item(2);
  assert.equal(s.delete(a), false);
  s.add(a);
  s.add(a);
  assert.equal(s.size, 1);
  assert.equal(s.delete(b), false);
  assert.equal(s.size, 1);
  assert.equal(s.delete(a), true);
  assert.equal(s.delete(a), false);
  assert.equal(s.has(a), false);
  assert.equal(a.slot, -1);
});

test('an item deleted from one set is not taken for a member of another that has something at its old index', () => {
  const one = new SlotSet<Item>();
  const two = new SlotSet<Item>();
  const a = item(1);
  const b = item(2);
  one.add(a);
  two.add(b);
  one.delete(a);
  assert.equal(two.has(a), false);
  two.add(a);
  assert.equal(two.has(a), true);
  assert.deepEqual(contents(two), [1, 2]);
});

test('a snapshot does not change when the set does', () => {
  const s = new SlotSet<Item>();
  const items = [item(1), item(2), item(3)];
  for (const it of items) s.add(it);
  const snap = s.snapshot();
  s.delete(items[0] as Item);
  assert.deepEqual(snap.map((i) => i.id).sort(), [1, 2, 3]);
  assert.deepEqual(contents(s), [2, 3]);
});
