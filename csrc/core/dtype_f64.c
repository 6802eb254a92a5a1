/* dtype_f32.c: the float64 kernels, from the shared template bodies. */
#define NN_REAL_IS_DOUBLE
#include "nn.h"
#include "nn_blas.h"
#include "nn_template.h"
#include "net_internal.h"

#include <math.h>
#include <string.h>

#include "gemm.c"
#include "linear.c"
#include "act.c"
#include "softmax.c"
#include "loss.c"
#include "sgd.c"
#include "net_step.c"
