/* Unit tests of the task store: id lookup through growth and deletion. */
#include "helpers.h"
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static void test_insert_find_remove_many_ids_stay_findable(void **state)
{
    (void)state;
    invoker__tasks ts;
    assert_int_equal(invoker__tasks_init(&ts), 0);
    enum { N = 5000 };
    invoker__task **all = calloc(N + 1, sizeof *all);
    for (invoker_id id = 1; id <= N; id++) {
        unsigned char arg[100];
        fill_pattern(arg, sizeof arg, id);
        all[id] = invoker__tasks_new(&ts, id, arg, id % 101);
        assert_non_null(all[id]);
        assert_int_equal(invoker__tasks_insert(&ts, all[id]), 0);
    }
    /* Remove every third: the rest must still be found, the removed not. */
    for (invoker_id id = 3; id <= N; id += 3) {
        invoker__tasks_remove(&ts, all[id]);
        invoker__tasks_release(&ts, all[id]);
        all[id] = NULL;
    }
    for (invoker_id id = 1; id <= N; id++) {
        invoker__task *t = invoker__tasks_find(&ts, id);
        if (id % 3 == 0) {
            assert_null(t);
            continue;
        }
        assert_ptr_equal(t, all[id]);
        unsigned char arg[100];
        fill_pattern(arg, sizeof arg, id);
        assert_int_equal(t->arg_len, id % 101);
        assert_memory_equal(t->arg, arg, t->arg_len);
    }
    assert_null(invoker__tasks_find(&ts, N + 1));
    assert_int_equal(ts.count, N - N / 3);
    invoker__tasks_free(&ts);
    free(all);
}

static void test_lists_keep_order_and_unlink_anywhere(void **state)
{
    (void)state;
    invoker__tasks ts;
    assert_int_equal(invoker__tasks_init(&ts), 0);
    invoker__list l = { 0 };
    invoker__task *t[4];
    for (int i = 0; i < 4; i++) {
        t[i] = invoker__tasks_new(&ts, (invoker_id)i + 1, NULL, 0);
        invoker__list_push_back(&l, t[i]);
    }
    invoker__list_unlink(&l, t[1]);
    invoker__list_push_front(&l, t[1]);
    invoker__list_unlink(&l, t[3]);
    assert_int_equal(l.count, 3);
    assert_ptr_equal(l.head, t[1]);
    assert_ptr_equal(l.head->next, t[0]);
    assert_ptr_equal(l.tail, t[2]);
    assert_null(l.tail->next);
    for (int i = 0; i < 4; i++)
        invoker__tasks_release(&ts, t[i]);
    invoker__tasks_free(&ts);
}

/* A few slow tasks among a stream of fast ones: the window slides past
 * them, they move to the slow table, and every one stays findable until
 * removed, while the ring stays small. */
static void test_stragglers_outlive_the_window_and_stay_findable(void **state)
{
    (void)state;
    invoker__tasks ts;
    assert_int_equal(invoker__tasks_init(&ts), 0);
    enum { N = 200000, WINDOW = 100 };
    invoker__task *slow[N / 1000 + 1] = { 0 };
    invoker__task *window[WINDOW] = { 0 };
    for (invoker_id id = 1; id <= N; id++) {
        invoker__task *t = invoker__tasks_new(&ts, id, NULL, 0);
        assert_non_null(t);
        assert_int_equal(invoker__tasks_insert(&ts, t), 0);
        if (id % 1000 == 7) {
            slow[id / 1000] = t;   /* never removed in the stream */
            continue;
        }
        invoker__task **w = &window[id % WINDOW];
        if (*w) {
            assert_ptr_equal(invoker__tasks_find(&ts, (*w)->id), *w);
            invoker__tasks_remove(&ts, *w);
            assert_null(invoker__tasks_find(&ts, (*w)->id));
            invoker__tasks_release(&ts, *w);
        }
        *w = t;
    }
    assert_true(ts.nslow > 0);              /* some went the slow way */
    assert_true(ts.ring_cap <= 4096);       /* and the ring did not grow with the stream */
    for (size_t i = 0; i < N / 1000; i++) {
        assert_non_null(slow[i]);
        assert_ptr_equal(invoker__tasks_find(&ts, slow[i]->id), slow[i]);
        invoker__tasks_remove(&ts, slow[i]);
        assert_null(invoker__tasks_find(&ts, slow[i]->id));
        invoker__tasks_release(&ts, slow[i]);
    }
    assert_int_equal(ts.nslow, 0);
    size_t live = 0;
    for (size_t i = 0; i < WINDOW; i++)
        if (window[i]) {
            assert_ptr_equal(invoker__tasks_find(&ts, window[i]->id), window[i]);
            live++;
        }
    assert_int_equal(ts.count, live);
    assert_null(invoker__tasks_find(&ts, N + 1));
    assert_null(invoker__tasks_find(&ts, 0));
    invoker__tasks_free(&ts);
}

/* Ids far apart (a jump past the whole window, or one below it) cost
 * one pass over the ring, not one step per id passed over. */
static void test_a_jump_in_ids_moves_the_window_at_once(void **state)
{
    (void)state;
    invoker__tasks ts;
    assert_int_equal(invoker__tasks_init(&ts), 0);
    invoker_id ids[] = { 5, 6, (invoker_id)1 << 40, ((invoker_id)1 << 40) + 1, 3,
                         ((invoker_id)1 << 43) };
    invoker__task *t[6];
    for (int i = 0; i < 6; i++) {
        t[i] = invoker__tasks_new(&ts, ids[i], NULL, 0);
        assert_int_equal(invoker__tasks_insert(&ts, t[i]), 0);
    }
    for (int i = 0; i < 6; i++)
        assert_ptr_equal(invoker__tasks_find(&ts, ids[i]), t[i]);
    assert_null(invoker__tasks_find(&ts, 4));
    assert_null(invoker__tasks_find(&ts, ((invoker_id)1 << 40) + 2));
    assert_int_equal(ts.count, 6);
    for (int i = 5; i >= 0; i--) {
        invoker__tasks_remove(&ts, t[i]);
        invoker__tasks_remove(&ts, t[i]);   /* twice: the second finds nothing */
        assert_null(invoker__tasks_find(&ts, ids[i]));
        invoker__tasks_release(&ts, t[i]);
    }
    assert_int_equal(ts.count, 0);
    invoker__tasks_free(&ts);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_insert_find_remove_many_ids_stay_findable),
        cmocka_unit_test(test_lists_keep_order_and_unlink_anywhere),
        cmocka_unit_test(test_stragglers_outlive_the_window_and_stay_findable),
        cmocka_unit_test(test_a_jump_in_ids_moves_the_window_at_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
