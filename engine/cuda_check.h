// Checked CUDA-library calls (only in builds with SSLIGHT_WITH_CUDA): each failure throws LibraryError
// naming the call, its status text, the file and the line.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "engine/check.h"

#define CUDA_CHECK(call) \
    SSL_LIB_CHECK_GEN("CUDA", call, cudaError_t, ssl_status_ == cudaSuccess, cudaGetErrorString(ssl_status_))
#define CUBLAS_CHECK(call) \
    SSL_LIB_CHECK_GEN("cuBLAS", call, cublasStatus_t, ssl_status_ == CUBLAS_STATUS_SUCCESS, cublasGetStatusString(ssl_status_))
#ifdef SSLIGHT_WITH_CUDNN
#include <cudnn.h>
#define CUDNN_CHECK(call) \
    SSL_LIB_CHECK_GEN("cuDNN", call, cudnnStatus_t, ssl_status_ == CUDNN_STATUS_SUCCESS, cudnnGetErrorString(ssl_status_))
#endif
#ifdef SSLIGHT_WITH_NCCL
#include <nccl.h>
#define NCCL_CHECK(call) \
    SSL_LIB_CHECK_GEN("NCCL", call, ncclResult_t, ssl_status_ == ncclSuccess, ncclGetErrorString(ssl_status_))
#endif
