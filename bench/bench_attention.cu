/* bench_attention.cu - timing of onebit_cuda.cuh's flash attention at the two seed models' shapes.
 *
 * Build: make bench (nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a bench/bench_attention.cu)
 * Usage: bench_attention [runs]      (default 60 timed runs per variant after 5 warm-up runs)
 *
 * Times forward, backward and forward+backward with CUDA events (median over the runs, each run on
 * the next of 3 input sets so no run sees another's inputs in L2), for the wgmma path (the public API)
 * and the mma.sync path. FLOPs: forward 4*B*H*T*T*D/2 (causal), backward 2.5x the forward.
 */
#define ONEBIT_IMPLEMENTATION
#include "../onebit_cuda.cuh"

#include <algorithm>
#include <stdio.h>
#include <stdlib.h>
#include <vector>

#define CK(x)                                                                                          \
    do {                                                                                               \
        cudaError_t e_ = (x);                                                                          \
        if (e_ != cudaSuccess) {                                                                       \
            printf("cuda error: %s at %s:%d: %s\n", #x, __FILE__, __LINE__, cudaGetErrorString(e_));   \
            exit(1);                                                                                   \
        }                                                                                              \
    } while (0)

__global__ void k_fill(__nv_bfloat16 *p, size_t n, uint32_t seed, float amp) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint32_t x = (uint32_t)i * 2654435761u ^ seed;
        x ^= x >> 16; x *= 0x7feb352dU; x ^= x >> 15; x *= 0x846ca68bU; x ^= x >> 16;
        p[i] = __float2bfloat16(((x >> 8) * (1.0f / 16777216.0f) * 2.0f - 1.0f) * amp);
    }
}

static float median(std::vector<float> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

static void bench_shape(int B, int T, int H, int Hkv, int D, int runs) {
    const int NSET = 3;
    const size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * Hkv * D, nl = (size_t)B * H * T;
    __nv_bfloat16 *q[NSET], *k[NSET], *v[NSET], *dO[NSET], *o[NSET];
    float *lse[NSET], *dq, *dk, *dv, *ws;
    for (int s = 0; s < NSET; ++s) {
        CK(cudaMalloc(&q[s], nq * 2)); CK(cudaMalloc(&k[s], nk * 2)); CK(cudaMalloc(&v[s], nk * 2));
        CK(cudaMalloc(&dO[s], nq * 2)); CK(cudaMalloc(&o[s], nq * 2)); CK(cudaMalloc(&lse[s], nl * 4));
        k_fill<<<2048, 256>>>(q[s], nq, 100 + 4 * s, 2.f);
        k_fill<<<2048, 256>>>(k[s], nk, 101 + 4 * s, 2.f);
        k_fill<<<2048, 256>>>(v[s], nk, 102 + 4 * s, 1.f);
        k_fill<<<2048, 256>>>(dO[s], nq, 103 + 4 * s, 1.f);
    }
    CK(cudaMalloc(&dq, nq * 4)); CK(cudaMalloc(&dk, nk * 4)); CK(cudaMalloc(&dv, nk * 4));
    const size_t wsb = ob_cuda_attention_backward_workspace(B, T, H, Hkv, D);
    CK(cudaMalloc(&ws, wsb));
    CK(cudaDeviceSynchronize());
    const double fl_f = 4.0 * B * H * (double)T * T * D / 2.0, fl_b = 2.5 * fl_f;
    const char *names[2] = {"wgmma", "mma.sync"};
    cudaEvent_t e0, e1, e2;
    CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1)); CK(cudaEventCreate(&e2));
    for (int p = 0; p < 2; ++p) {
        ob_cuda_attention_path = 1 - p;
        for (int w = 0; w < 5; ++w) {
            const int s = w % NSET;
            CK(ob_cuda_attention_forward(q[s], k[s], v[s], o[s], lse[s], B, T, H, Hkv, D, 0));
            CK(ob_cuda_attention_backward(q[s], k[s], v[s], o[s], dO[s], lse[s], dq, dk, dv, ws, wsb, B, T, H, Hkv, D, 0));
        }
        CK(cudaDeviceSynchronize());
        std::vector<float> tf, tb, tt;
        for (int r = 0; r < runs; ++r) {
            const int s = r % NSET;
            CK(cudaEventRecord(e0));
            CK(ob_cuda_attention_forward(q[s], k[s], v[s], o[s], lse[s], B, T, H, Hkv, D, 0));
            CK(cudaEventRecord(e1));
            CK(ob_cuda_attention_backward(q[s], k[s], v[s], o[s], dO[s], lse[s], dq, dk, dv, ws, wsb, B, T, H, Hkv, D, 0));
            CK(cudaEventRecord(e2));
            CK(cudaEventSynchronize(e2));
            float a, b2, c;
            CK(cudaEventElapsedTime(&a, e0, e1)); CK(cudaEventElapsedTime(&b2, e1, e2)); CK(cudaEventElapsedTime(&c, e0, e2));
            tf.push_back(a); tb.push_back(b2); tt.push_back(c);
        }
        const float mf = median(tf), mb = median(tb), mt = median(tt);
        printf("B=%-4d T=%d H=%d Hkv=%d D=%-3d %-8s | fwd %7.3f ms %6.1f TFLOPS | bwd %7.3f ms %6.1f TFLOPS | total %7.3f ms %6.1f TFLOPS"
               " | min fwd %.3f bwd %.3f\n",
               B, T, H, Hkv, D, names[p], mf, fl_f / mf * 1e-9, mb, fl_b / mb * 1e-9, mt, (fl_f + fl_b) / mt * 1e-9,
               *std::min_element(tf.begin(), tf.end()), *std::min_element(tb.begin(), tb.end()));
        fflush(stdout);
    }
    cudaEventDestroy(e0); cudaEventDestroy(e1); cudaEventDestroy(e2);
    for (int s = 0; s < NSET; ++s) { cudaFree(q[s]); cudaFree(k[s]); cudaFree(v[s]); cudaFree(dO[s]); cudaFree(o[s]); cudaFree(lse[s]); }
    cudaFree(dq); cudaFree(dk); cudaFree(dv); cudaFree(ws);
}

int main(int argc, char **argv) {
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        printf("SKIP bench: no CUDA device\n");
        return 0;
    }
    const int runs = argc > 1 ? atoi(argv[1]) : 60;
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s, %d SMs, %d runs per variant (median), 3 rotating input sets\n", prop.name, prop.multiProcessorCount, runs);
    bench_shape(64, 1024, 8, 4, 128, runs); /* XNOR model: the whole step's 65,536 tokens */
    bench_shape(8, 1024, 8, 4, 128, runs);  /* XNOR model: one micro-batch of 8 x 1024, as the trainer calls it */
    bench_shape(512, 1024, 8, 4, 96, runs); /* binary model */
    return 0;
}
