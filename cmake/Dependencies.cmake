# Third-party dependencies: OpenMP, threads, a CBLAS (OpenBLAS from Debian), doctest, and imported targets
# for cuDNN and NCCL from the CUDA toolkit directories (CMake ships no Find modules for those two).
find_package(Threads REQUIRED)
find_package(OpenMP REQUIRED)

# SSLIGHT_DEPS_PREFIX: a folder with include/ and lib/ searched first (the GPU machine has no package
# registry: bench/prepare_device_carry.sh fills such a folder here and it travels with the tree).
set(SSLIGHT_DEPS_PREFIX "" CACHE PATH "extra prefix with include/ and lib/ for cblas, OpenBLAS and doctest")
# OpenBLAS: the OpenMP build is preferred. The engine's CPU kernels use OpenMP; the pthread build of
# OpenBLAS keeps its own threads spinning against OpenMP's on the same cores (a profile of a ResNet18 step
# on 2 cores spent most of its time in the two pools' spin-waits). Debian's alternatives point
# libopenblas.so.0 at the pthread build, so the OpenMP one is linked with an RPATH to its folder.
find_path(SSLIGHT_CBLAS_INCLUDE cblas.h PATHS ${SSLIGHT_DEPS_PREFIX}/include /usr/include/x86_64-linux-gnu/openblas-openmp
          /usr/include/x86_64-linux-gnu/openblas-pthread /usr/include/openblas /usr/include/x86_64-linux-gnu /usr/include
          NO_DEFAULT_PATH)
find_library(SSLIGHT_BLAS_LIBRARY NAMES openblas libopenblas.so.0
             PATHS ${SSLIGHT_DEPS_PREFIX}/lib /usr/lib/x86_64-linux-gnu/openblas-openmp
                   /usr/lib/x86_64-linux-gnu/openblas-pthread NO_DEFAULT_PATH)
if(NOT SSLIGHT_BLAS_LIBRARY)
  find_library(SSLIGHT_BLAS_LIBRARY NAMES openblas blas)
endif()
if(NOT SSLIGHT_CBLAS_INCLUDE OR NOT SSLIGHT_BLAS_LIBRARY)
  message(FATAL_ERROR "sslight: a CBLAS (cblas.h + libopenblas) is required: run scripts/install_deps.sh "
                      "(apt-get install libopenblas-openmp-dev)")
endif()
message(STATUS "sslight: BLAS ${SSLIGHT_BLAS_LIBRARY}")
add_library(sslight::blas INTERFACE IMPORTED)
target_include_directories(sslight::blas INTERFACE ${SSLIGHT_CBLAS_INCLUDE})
target_link_libraries(sslight::blas INTERFACE ${SSLIGHT_BLAS_LIBRARY})
get_filename_component(_blas_dir ${SSLIGHT_BLAS_LIBRARY} DIRECTORY)
if(NOT _blas_dir MATCHES "^/usr/lib/x86_64-linux-gnu$|^/usr/lib$")
  target_link_options(sslight::blas INTERFACE "-Wl,-rpath,${_blas_dir}")
endif()

# cuDNN and NCCL: the CUDA toolkit directories, or SSLIGHT_CUDNN_ROOT / SSLIGHT_NCCL_ROOT (for example the
# nvidia/cudnn and nvidia/nccl folders of a PyTorch wheel environment, whose libraries carry only the
# versioned names libcudnn.so.9 and libnccl.so.2).
set(SSLIGHT_CUDNN_ROOT "" CACHE PATH "folder with include/cudnn.h and lib/libcudnn.so*")
set(SSLIGHT_NCCL_ROOT "" CACHE PATH "folder with include/nccl.h and lib/libnccl.so*")
if(CUDAToolkit_FOUND)
  set(_cuda_libdirs ${CUDAToolkit_LIBRARY_DIR} ${CUDAToolkit_TARGET_DIR}/lib64 ${CUDAToolkit_TARGET_DIR}/lib
      /usr/lib/x86_64-linux-gnu)
  find_library(SSLIGHT_CUDNN_LIBRARY NAMES cudnn libcudnn.so.9 PATHS ${SSLIGHT_CUDNN_ROOT}/lib ${_cuda_libdirs} NO_DEFAULT_PATH)
  find_path(SSLIGHT_CUDNN_INCLUDE cudnn.h PATHS ${SSLIGHT_CUDNN_ROOT}/include ${CUDAToolkit_INCLUDE_DIRS} /usr/include NO_DEFAULT_PATH)
  if(SSLIGHT_CUDNN_LIBRARY AND SSLIGHT_CUDNN_INCLUDE)
    add_library(sslight::cudnn UNKNOWN IMPORTED)
    set_target_properties(sslight::cudnn PROPERTIES IMPORTED_LOCATION ${SSLIGHT_CUDNN_LIBRARY}
                          INTERFACE_INCLUDE_DIRECTORIES ${SSLIGHT_CUDNN_INCLUDE})
  endif()
  find_library(SSLIGHT_NCCL_LIBRARY NAMES nccl libnccl.so.2 PATHS ${SSLIGHT_NCCL_ROOT}/lib ${_cuda_libdirs} NO_DEFAULT_PATH)
  find_path(SSLIGHT_NCCL_INCLUDE nccl.h PATHS ${SSLIGHT_NCCL_ROOT}/include ${CUDAToolkit_INCLUDE_DIRS} /usr/include NO_DEFAULT_PATH)
  if(SSLIGHT_NCCL_LIBRARY AND SSLIGHT_NCCL_INCLUDE)
    add_library(sslight::nccl UNKNOWN IMPORTED)
    set_target_properties(sslight::nccl PROPERTIES IMPORTED_LOCATION ${SSLIGHT_NCCL_LIBRARY}
                          INTERFACE_INCLUDE_DIRECTORIES ${SSLIGHT_NCCL_INCLUDE})
  endif()
endif()


