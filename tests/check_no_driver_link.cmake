# Fails when BINARY lists the CUDA driver library (libcuda.so*) among its direct dependencies.
execute_process(COMMAND readelf -d ${BINARY} OUTPUT_VARIABLE out RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "readelf failed on ${BINARY}")
endif()
if(out MATCHES "libcuda\\.so")
  message(FATAL_ERROR "${BINARY} links the CUDA driver stub libcuda.so; it would not start without a driver")
endif()
message(STATUS "${BINARY} does not link libcuda.so")
