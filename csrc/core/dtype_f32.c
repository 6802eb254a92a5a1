/* dtype_f32.c: the float32 kernels and engine, from the shared template
 * bodies (each written once over `real`). */
#define NN_REAL_IS_FLOAT
#include "nn.h"
#include "nn_blas.h"
#include "nn_template.h"
#include "core_internal.h"

#include <math.h>
#include <string.h>

#include "gemm.c"
#include "linear.c"
#include "act.c"
#include "softmax.c"
#include "merge.c"
#include "dropout.c"
#include "norm.c"
#include "loss.c"
#include "clip.c"
#include "optim_shared.c"
#include "sgd.c"
#include "adam.c"
#include "rmsprop.c"
#include "adagrad.c"
#include "graph_run.c"
#include "finite.c"
