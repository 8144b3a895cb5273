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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_insert_find_remove_many_ids_stay_findable),
        cmocka_unit_test(test_lists_keep_order_and_unlink_anywhere),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
