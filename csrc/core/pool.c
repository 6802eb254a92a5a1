/*
 * pool.c: nnlayers' worker threads.
 *
 * OpenBLAS can hand the jobs of a parallel product to the program instead
 * of waking its own thread pool (openblas_set_threads_callback_function,
 * OpenBLAS >= 0.3.28). nnlayers installs such a callback: job 0 runs on
 * the calling thread, jobs 1.. on nnlayers' workers. Because the workers
 * are nnlayers' own, they can also take the core's other work while no
 * product needs them: the elementwise passes over big blocks are split
 * between the caller and the workers (nn_parallel_range), and fit gathers
 * the next minibatch on a worker while the current one trains
 * (graph_run.c). OpenBLAS's own threads then stay asleep: two pools
 * spinning on two cores would fight each other.
 *
 * The thread count stays OpenBLAS's (openblas_set/get_num_threads,
 * nl.set_num_threads, threadpoolctl): the pool keeps that many workers
 * minus one, made when a product first needs them.
 *
 * Rules that keep it simple:
 *   - one parallel product at a time (group_lock): OpenBLAS indexes its
 *     per-thread buffers by job number, so two products from two user
 *     threads must not overlap;
 *   - the jobs of a product run concurrently, one per thread (OpenBLAS's
 *     level-3 jobs wait on each other), so a product never waits for
 *     a worker that is busy with something else for long: background work
 *     comes in small chunks and a worker checks for a job between chunks;
 *   - one foreground and one background task on offer at a time (a second
 *     one from another user thread is run by its owner alone); whoever
 *     needs a task's result finishes the unclaimed chunks itself, so it
 *     never depends on a worker being free;
 *   - tasks use no more threads than OpenBLAS's count says right now;
 *   - a training step's batch split (graph_run.c) is two foreground tasks
 *     of long chunks, one block of rows per thread. Its products stay on
 *     their threads (OpenBLAS at one thread from nn_step_begin to
 *     nn_step_end), its parts post no tasks of their own, and a product
 *     that goes parallel all the same (the count raised by another user
 *     thread) takes threads of its own rather than a busy worker;
 *   - training steps at two threads or more take turns (step_lock), so
 *     each decides from the real thread count and a model trained in one
 *     Python thread ends where it would alone.
 * An idle worker spins for NN_POOL_SPIN_NS, then sleeps until work comes.
 * Workers block every signal: Ctrl-C goes to the thread that runs Python.
 */
#include "nn.h"
#include "nn_blas.h"

#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <time.h>

#define NN_POOL_MAX 64              /* workers at most (OpenBLAS's MAX_CPU) */
#define NN_POOL_SPIN_NS 20000000L   /* 20 ms of spinning before sleeping */

typedef struct nn_worker {
    pthread_t thread;
    int has_job;            /* atomic: 1 while a product's job waits/runs */
    nn_blas_dojob dojob;      /* the job: dojob(thread_num, jobdata, data) */
    void *jobdata;
    int dojob_data;
    int thread_num;
    char pad[64];           /* keep workers' flags on separate lines */
} nn_worker;

static struct {
    pthread_mutex_t lock;       /* n_workers, sleeping workers */
    pthread_cond_t wake;
    pthread_mutex_t group_lock; /* one parallel product at a time */
    int n_workers;
    int installed;
    int max_threads;            /* OpenBLAS's table size (MAX_THREADS) */
    int sleepers;               /* atomic: workers asleep (or going) */
    unsigned long posts;        /* atomic: bumped whenever work is posted */
    nn_task *slot[2];           /* atomic: tasks on offer, FOREGROUND (a
                                   caller waits for it) and BACKGROUND */
    int task_users;             /* atomic: workers inside a task's chunks */
    nn_worker w[NN_POOL_MAX];
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
          PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, 0, 0, {NULL, NULL}, 0, {{0}}};

enum { FOREGROUND = 0, BACKGROUND = 1 };

/* 1 on nnlayers' worker threads */
static _Thread_local int on_worker;
/* 1 on a user thread between nn_step_begin and nn_step_end of a split */
static _Thread_local int splitting;

/* Training steps at two threads or more (nn_step_begin): one user thread
 * at a time; the thread count OpenBLAS had before the split under way, or
 * 0 (atomic). */
static pthread_mutex_t step_lock = PTHREAD_MUTEX_INITIALIZER;
static int step_saved_threads;
static int split_keep_blas_threads;   /* test hook: leave OpenBLAS's count */
static unsigned long long split_steps;   /* atomic: split steps so far */
static int split_active;   /* atomic: 1 while a split step runs */

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static long elapsed_ns(const struct timespec *since)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (t.tv_sec - since->tv_sec) * 1000000000L +
           (t.tv_nsec - since->tv_nsec);
}

/* ---- tasks ---- */

/* Threads a task may use now: OpenBLAS's count (which threadpoolctl may
 * have lowered since the workers were made), at most the workers + 1. */
static int usable_threads(void)
{
    int t = NN_BLAS(openblas_get_num_threads)();
    int w = __atomic_load_n(&pool.n_workers, __ATOMIC_ACQUIRE);
    return t < w + 1 ? t : w + 1;
}

/* Claim and run one chunk of the task in slot s; 1 if a chunk ran. */
static int run_chunk_of(int s)
{
    nn_task *t = __atomic_load_n(&pool.slot[s], __ATOMIC_SEQ_CST);
    size_t c;
    if (!t)
        return 0;
    c = __atomic_fetch_add(&t->next, 1, __ATOMIC_ACQ_REL);
    if (c >= t->n_chunks)
        return 0;
    t->fn(t->arg, c);
    __atomic_add_fetch(&t->done, 1, __ATOMIC_RELEASE);
    return 1;
}

/* A worker's turn at the tasks: a chunk of the foreground task if there
 * is one (a caller waits for it), else of the background task. */
static int run_task_chunk(void)
{
    int ran;
    __atomic_add_fetch(&pool.task_users, 1, __ATOMIC_SEQ_CST);
    ran = run_chunk_of(FOREGROUND) || run_chunk_of(BACKGROUND);
    __atomic_sub_fetch(&pool.task_users, 1, __ATOMIC_SEQ_CST);
    return ran;
}

/* A chunk of the background task, on any thread; 1 if one ran. */
static int run_background_chunk(void)
{
    int ran;
    __atomic_add_fetch(&pool.task_users, 1, __ATOMIC_SEQ_CST);
    ran = run_chunk_of(BACKGROUND);
    __atomic_sub_fetch(&pool.task_users, 1, __ATOMIC_SEQ_CST);
    return ran;
}

static void wake_sleepers(void)
{
    __atomic_add_fetch(&pool.posts, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&pool.sleepers, __ATOMIC_SEQ_CST) > 0) {
        pthread_mutex_lock(&pool.lock);
        pthread_cond_broadcast(&pool.wake);
        pthread_mutex_unlock(&pool.lock);
    }
}

/* Offer t in slot s, if the slot is free (another user thread's task may
 * hold it: then t is simply run by its owner) and threads may be used. */
static void offer(nn_task *t, int s)
{
    nn_task *none = NULL;
    t->next = 0;
    t->done = 0;
    if (usable_threads() < 2)
        return;
    if (__atomic_compare_exchange_n(&pool.slot[s], &none, t, 0,
                                    __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
        wake_sleepers();
}

/* Run t's unclaimed chunks here, wait for the claimed ones, withdraw t
 * from slot s and wait until no worker still holds it (the caller may
 * reuse t's memory at once). */
static void finish(nn_task *t, int s)
{
    size_t c;
    nn_task *mine = t;
    while ((c = __atomic_fetch_add(&t->next, 1, __ATOMIC_ACQ_REL)) <
           t->n_chunks) {
        t->fn(t->arg, c);
        __atomic_add_fetch(&t->done, 1, __ATOMIC_RELEASE);
    }
    /* while a worker ends a foreground chunk, gather rows for fit's next
     * batch (the background task) instead of only waiting */
    while (__atomic_load_n(&t->done, __ATOMIC_ACQUIRE) < t->n_chunks)
        if (s != FOREGROUND || !run_background_chunk())
            cpu_relax();
    __atomic_compare_exchange_n(&pool.slot[s], &mine, NULL, 0,
                                __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&pool.task_users, __ATOMIC_SEQ_CST) > 0)
        cpu_relax();
}

void nn_task_post(nn_task *t)
{
    offer(t, BACKGROUND);
}

void nn_task_finish(nn_task *t)
{
    finish(t, BACKGROUND);
}

void nn_task_run(nn_task *t)
{
    nn_task *none = NULL;
    t->next = 0;
    t->done = 0;
    if (__atomic_load_n(&pool.n_workers, __ATOMIC_ACQUIRE) > 0 &&
        __atomic_compare_exchange_n(&pool.slot[FOREGROUND], &none, t, 0,
                                    __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
        wake_sleepers();
    finish(t, FOREGROUND);
}

/*
 * Training steps from different user threads take turns (step_lock), so
 * that each one decides between a whole and a split step from the real
 * thread count and runs its products at the count it decided on: a model
 * ends where it would alone, to the bit. While a batch is split, every
 * product of a part must stay on the thread that runs the part, and
 * OpenBLAS decides from its global thread count alone, so the count is 1
 * until nn_step_end. (A user thread that sets the count in between makes
 * products on the workers parallel again: run_parallel_jobs then gives
 * them threads of their own.)
 */
int nn_step_begin(int want)
{
    int threads, real;
    if (!pool.installed || on_worker)
        return -1;
    /* At one thread no step splits or changes the count: steps from
     * several user threads then run at the same time. The real count,
     * not the 1 of another thread's split: */
    real = __atomic_load_n(&step_saved_threads, __ATOMIC_SEQ_CST);
    if (real == 0)
        real = NN_BLAS(openblas_get_num_threads)();
    if (real < 2)
        return -1;
    pthread_mutex_lock(&step_lock);
    threads = usable_threads();
    if (want < 2 || threads < 2)
        return 0;
    __atomic_store_n(&step_saved_threads, NN_BLAS(openblas_get_num_threads)(),
                     __ATOMIC_SEQ_CST);
    /* From here on parallel products take threads of their own (see
     * run_jobs_on_own_threads); wait for one already on the workers. */
    __atomic_store_n(&split_active, 1, __ATOMIC_SEQ_CST);
    pthread_mutex_lock(&pool.group_lock);
    pthread_mutex_unlock(&pool.group_lock);
    if (!split_keep_blas_threads)
        NN_BLAS(openblas_set_num_threads)(1);
    splitting = 1;
    __atomic_add_fetch(&split_steps, 1, __ATOMIC_RELAXED);
    return threads < want ? threads : want;
}

void nn_step_end(int parts)
{
    if (parts < 0)
        return;
    if (parts >= 2) {
        splitting = 0;
        if (!split_keep_blas_threads)
            NN_BLAS(openblas_set_num_threads)(step_saved_threads);
        __atomic_store_n(&split_active, 0, __ATOMIC_SEQ_CST);
        __atomic_store_n(&step_saved_threads, 0, __ATOMIC_SEQ_CST);
    }
    pthread_mutex_unlock(&step_lock);
}

void nn_steps_hold(void)
{
    if (pool.installed && !on_worker)
        pthread_mutex_lock(&step_lock);
}

void nn_steps_release(void)
{
    if (pool.installed && !on_worker)
        pthread_mutex_unlock(&step_lock);
}

unsigned long long nn_split_steps(void)
{
    return __atomic_load_n(&split_steps, __ATOMIC_RELAXED);
}

int nn_split_keep_blas_threads(int on)
{
    int old = split_keep_blas_threads;
    split_keep_blas_threads = on != 0;
    return old;
}

/* The chunks of a range task: [lo, hi) pieces of [0, n), edges on
 * multiples of `align` items. */
typedef struct {
    void (*fn)(void *arg, size_t lo, size_t hi);
    void *arg;
    size_t n, chunks, align;
} range_task;

static void range_chunk(void *arg, size_t c)
{
    const range_task *r = arg;
    size_t lo = r->n * c / r->chunks, hi = r->n * (c + 1) / r->chunks;
    lo -= lo % r->align;
    if (c + 1 < r->chunks)
        hi -= hi % r->align;
    if (lo < hi)
        r->fn(r->arg, lo, hi);
}

void nn_parallel_range(void (*fn)(void *arg, size_t lo, size_t hi), void *arg,
                       size_t n, size_t grain, size_t align)
{
    int threads;
    range_task r;
    nn_task t;
    /* inside a split's part (on a worker, or on the splitting thread)
     * the other threads are busy with the other parts */
    if (n < 2 * grain || on_worker || splitting ||
        (threads = usable_threads()) < 2) {
        fn(arg, 0, n);
        return;
    }
    r.fn = fn;
    r.arg = arg;
    r.n = n;
    r.align = align ? align : 1;
    r.chunks = n / grain;             /* two pieces per thread at most: */
    if (r.chunks > 2 * (size_t)threads) /* some balance, little overhead */
        r.chunks = 2 * (size_t)threads;
    t.fn = range_chunk;
    t.arg = &r;
    t.n_chunks = r.chunks;
    offer(&t, FOREGROUND);
    finish(&t, FOREGROUND);
}

/* ---- workers ---- */

static int has_work(const nn_worker *w)
{
    return __atomic_load_n(&w->has_job, __ATOMIC_SEQ_CST) ||
           __atomic_load_n(&pool.slot[FOREGROUND], __ATOMIC_SEQ_CST) ||
           __atomic_load_n(&pool.slot[BACKGROUND], __ATOMIC_SEQ_CST);
}

static void sleep_until_work(nn_worker *w)
{
    unsigned long seen = __atomic_load_n(&pool.posts, __ATOMIC_SEQ_CST);
    pthread_mutex_lock(&pool.lock);
    __atomic_add_fetch(&pool.sleepers, 1, __ATOMIC_SEQ_CST);
    while (!has_work(w) &&
           __atomic_load_n(&pool.posts, __ATOMIC_SEQ_CST) == seen)
        pthread_cond_wait(&pool.wake, &pool.lock);
    __atomic_sub_fetch(&pool.sleepers, 1, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&pool.lock);
}

static void *worker_main(void *arg)
{
    nn_worker *w = arg;
    struct timespec idle_since;
    unsigned spins = 0;
    on_worker = 1;
    clock_gettime(CLOCK_MONOTONIC, &idle_since);
    for (;;) {
        if (__atomic_load_n(&w->has_job, __ATOMIC_ACQUIRE)) {
            w->dojob(w->thread_num, w->jobdata, w->dojob_data);
            __atomic_store_n(&w->has_job, 0, __ATOMIC_RELEASE);
        } else if (!run_task_chunk()) {
            cpu_relax();
            if (++spins % 1024 || elapsed_ns(&idle_since) < NN_POOL_SPIN_NS)
                continue;
            sleep_until_work(w);
        }
        spins = 0;
        clock_gettime(CLOCK_MONOTONIC, &idle_since);
    }
    return NULL;
}

/* Make sure n workers exist; 0 or -1 if a thread could not be made. */
static int ensure_workers(int n)
{
    sigset_t all, old;
    int rc = 0;
    if (n > pool.max_threads - 1)
        return -1;   /* more than OpenBLAS can ask for */
    if (__atomic_load_n(&pool.n_workers, __ATOMIC_ACQUIRE) >= n)
        return 0;
    pthread_mutex_lock(&pool.lock);
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);   /* inherited by the workers */
    while (pool.n_workers < n) {
        nn_worker *w = &pool.w[pool.n_workers];
        w->has_job = 0;
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            rc = -1;
            break;
        }
        pthread_detach(w->thread);
        __atomic_store_n(&pool.n_workers, pool.n_workers + 1,
                         __ATOMIC_RELEASE);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_mutex_unlock(&pool.lock);
    return rc;
}

/*
 * The thread number OpenBLAS is told for job i. OpenBLAS keys a per-thread
 * buffer and a status word on it; its own (sleeping) threads watch status
 * words 0, 1, ..., and one that sees its word flip keeps spinning instead
 * of sleeping. So jobs count down from the top of OpenBLAS's tables
 * (max_threads - 1, - 2, ...), where none of its threads look unless it
 * was asked for more than half of max_threads.
 */
static int job_slot(int i)
{
    return pool.max_threads - 1 - i;
}

typedef struct {
    nn_blas_dojob dojob;
    void *jobdata;
    int dojob_data, slot;
} own_thread_job;

static void *own_thread_job_main(void *arg)
{
    own_thread_job *j = arg;
    j->dojob(j->slot, j->jobdata, j->dojob_data);
    return NULL;
}

static pthread_mutex_t own_lock = PTHREAD_MUTEX_INITIALIZER;

/*
 * A parallel product during a batch split: in a part only when OpenBLAS's
 * count was raised behind nnlayers' back (threadpoolctl from another user
 * thread) after nn_step_begin set it to 1; or from another user thread.
 * The workers are busy with the split's parts, and OpenBLAS lets one
 * level-3 product run at a time (its level3_lock, taken before this
 * callback): a product that waited for a busy worker whose part waits for
 * that lock would never finish. So during a split every parallel
 * product, in a part or elsewhere, runs jobs 1.. on threads of their own, one
 * product at a time (own_lock), with job slots in the middle of
 * OpenBLAS's tables, away from the pool's (top) and OpenBLAS's own
 * threads' (bottom). Slow, but it never waits for a busy thread.
 */
static void run_jobs_on_own_threads(nn_blas_dojob dojob, int numjobs,
                                    size_t elsize, void *jobdata,
                                    int dojob_data)
{
    pthread_t th[NN_POOL_MAX];
    own_thread_job job[NN_POOL_MAX];
    int i, made = 1, base = pool.max_threads / 2 - 1;
    sigset_t all, old;
    pthread_mutex_lock(&own_lock);
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    for (i = 1; i < numjobs && i < NN_POOL_MAX && i <= base; i++) {
        job[i].dojob = dojob;
        job[i].jobdata = (char *)jobdata + (size_t)i * elsize;
        job[i].dojob_data = dojob_data;
        job[i].slot = base - i;
        if (pthread_create(&th[i], NULL, own_thread_job_main, &job[i]) != 0)
            break;
        made = i + 1;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    /* jobs no thread took (no thread could be made, or more jobs than
     * half of OpenBLAS's table) run here: level-3 jobs would then wait
     * for each other, the limit of run_parallel_jobs below */
    for (i = made; i < numjobs; i++)
        dojob(i <= base ? base - i : 0, (char *)jobdata + (size_t)i * elsize,
              dojob_data);
    dojob(base, jobdata, dojob_data);
    for (i = 1; i < made; i++)
        pthread_join(th[i], NULL);
    pthread_mutex_unlock(&own_lock);
}

/*
 * OpenBLAS's callback: run numjobs jobs at once, job i as
 * dojob(slot, jobdata + i * elsize, dojob_data), and return when all are
 * done. The workers for OpenBLAS's thread count are made when the count is
 * set through nnlayers (nn_pool_reserve); a count raised behind its back
 * (threadpoolctl) gets its workers here. Should a thread fail to start,
 * the jobs run one after another on this thread: right for OpenBLAS's
 * level-1 and level-2 jobs, while level-3 jobs wait for each other and
 * would not finish (OpenBLAS's own pool has the same limit).
 */
static void run_parallel_jobs(int sync, nn_blas_dojob dojob, int numjobs,
                              size_t elsize, void *jobdata, int dojob_data)
{
    int i, helpers = numjobs - 1;
    (void)sync;   /* always synchronous: we return when every job is done */
    if (numjobs > 1 && (on_worker || splitting ||
                        __atomic_load_n(&split_active, __ATOMIC_SEQ_CST))) {
        run_jobs_on_own_threads(dojob, numjobs, elsize, jobdata, dojob_data);
        return;
    }
    if (numjobs <= 1 || ensure_workers(helpers) != 0) {
        for (i = 0; i < numjobs; i++)
            dojob(i, (char *)jobdata + (size_t)i * elsize, dojob_data);
        return;
    }
    pthread_mutex_lock(&pool.group_lock);
    for (i = 0; i < helpers; i++) {
        nn_worker *w = &pool.w[i];
        w->dojob = dojob;
        w->jobdata = (char *)jobdata + (size_t)(i + 1) * elsize;
        w->dojob_data = dojob_data;
        w->thread_num = job_slot(i + 1);
        __atomic_store_n(&w->has_job, 1, __ATOMIC_SEQ_CST);
    }
    wake_sleepers();
    dojob(job_slot(0), jobdata, dojob_data);
    for (i = 0; i < helpers; i++)
        while (__atomic_load_n(&pool.w[i].has_job, __ATOMIC_ACQUIRE))
            cpu_relax();
    pthread_mutex_unlock(&pool.group_lock);
}

/* In a child after fork() the workers are gone: start again with none. */
static void pool_after_fork_child(void)
{
    pthread_mutex_init(&pool.lock, NULL);
    pthread_cond_init(&pool.wake, NULL);
    pthread_mutex_init(&pool.group_lock, NULL);
    pthread_mutex_init(&step_lock, NULL);
    pthread_mutex_init(&own_lock, NULL);
    split_active = 0;
    step_saved_threads = 0;
    pool.n_workers = 0;
    pool.sleepers = 0;
    pool.slot[FOREGROUND] = pool.slot[BACKGROUND] = NULL;
    pool.task_users = 0;
}

/* MAX_THREADS=n from OpenBLAS's configuration string, or 0 */
static int blas_max_threads(void)
{
    const char *c = NN_BLAS(openblas_get_config)();
    const char *p = c ? strstr(c, "MAX_THREADS=") : NULL;
    long n = 0;
    if (!p)
        return 0;
    for (p += 12; *p >= '0' && *p <= '9' && n < 100000; p++)
        n = n * 10 + (*p - '0');
    return (int)n;
}

int nn_pool_install(void)
{
    if (pool.installed)
        return 1;
    if (!NN_BLAS(openblas_set_threads_callback_function))
        return 0;   /* OpenBLAS too old: it keeps its own pool */
    pool.max_threads = blas_max_threads();
    if (pool.max_threads < 2 || pool.max_threads > NN_POOL_MAX + 1)
        return 0;   /* tables of unknown size: leave OpenBLAS its threads */
    if (pthread_atfork(NULL, NULL, pool_after_fork_child) != 0)
        return 0;
    NN_BLAS(openblas_set_threads_callback_function)(run_parallel_jobs);
    pool.installed = 1;
    nn_pool_reserve(NN_BLAS(openblas_get_num_threads)());
    return 1;
}

int nn_pool_installed(void)
{
    return pool.installed;
}

nn_status nn_pool_reserve(int threads)
{
    if (!pool.installed || threads <= 1)
        return NN_OK;
    return ensure_workers(threads - 1) == 0 ? NN_OK : NN_ERR_NOMEM;
}

int nn_pool_workers(void)
{
    return __atomic_load_n(&pool.n_workers, __ATOMIC_ACQUIRE);
}
