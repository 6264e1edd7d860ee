# Distributed tests (label `mpi`): tests/test_dist.cpp's "mpi" suite under mpirun on 2 and 3 ranks (3 needs
# --oversubscribe on 2 cores) and the "mpi_timeout" suite, which passes only when a stalled rank makes the job
# stop with the collective timeout message. Skipped (exit 77, with the reason) where MPI or mpirun is missing.
# The "cpu" suite (single-process communicator and data parallel) runs everywhere.
add_engine_test(dist LABELS cpu gpu TIMEOUT 120)

set(_dist_env "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")
set(_dist_mpirun ${MPIEXEC_EXECUTABLE})
if(NOT _dist_mpirun)
  find_program(_dist_mpirun NAMES mpirun mpiexec)
endif()
foreach(np 2 3)
  if(TARGET test_dist AND SSLIGHT_WITH_MPI AND _dist_mpirun)
    add_test(NAME dist.mpi${np} COMMAND ${_dist_mpirun} --allow-run-as-root --oversubscribe -np ${np}
             $<TARGET_FILE:test_dist> --test-suite=mpi)
  else()
    add_test(NAME dist.mpi${np} COMMAND sh -c
             "echo 'SKIPPED: the mpi tests need MPI and mpirun (scripts/install_deps.sh installs libopenmpi-dev, openmpi-bin)'; exit 77")
  endif()
  set_tests_properties(dist.mpi${np} PROPERTIES LABELS mpi TIMEOUT 120 SKIP_RETURN_CODE 77 ENVIRONMENT "${_dist_env}")
endforeach()
if(TARGET test_dist AND SSLIGHT_WITH_MPI AND _dist_mpirun)
  add_test(NAME dist.mpi_timeout COMMAND ${_dist_mpirun} --allow-run-as-root --oversubscribe -np 3
           $<TARGET_FILE:test_dist> --test-suite=mpi_timeout)
  set_tests_properties(dist.mpi_timeout PROPERTIES LABELS mpi TIMEOUT 60 ENVIRONMENT
                       "${_dist_env};SSLIGHT_COLLECTIVE_TIMEOUT_S=2"
                       PASS_REGULAR_EXPRESSION "collective all_reduce #2 timed out on rank 0 .*ranks that did not arrive: 2;")
endif()
if(TARGET test_dist AND SSLIGHT_WITH_MPI AND _dist_mpirun)
  # A rank that exits without finalising: the launcher (or our timeout, whichever comes first) ends the job.
  add_test(NAME dist.mpi_exit COMMAND ${_dist_mpirun} --allow-run-as-root --oversubscribe -np 3
           $<TARGET_FILE:test_dist> --test-suite=mpi_exit)
  set_tests_properties(dist.mpi_exit PROPERTIES LABELS mpi TIMEOUT 60 ENVIRONMENT
                       "${_dist_env};SSLIGHT_COLLECTIVE_TIMEOUT_S=5"
                       PASS_REGULAR_EXPRESSION "rank 2 .*exiting improperly|collective all_reduce #2 timed out on rank 0")
endif()

# The methods (DINO, SwAV, MoCo-v2) data parallel on 2 ranks against one process (tests/test_dist_methods.cpp).
add_engine_test(dist_methods LABELS cpu TIMEOUT 120 LIBS sslight_ssl sslight_models sslight_data)
if(TARGET test_dist_methods AND SSLIGHT_WITH_MPI AND _dist_mpirun)
  add_test(NAME dist_methods.mpi2 COMMAND ${_dist_mpirun} --allow-run-as-root --oversubscribe -np 2
           $<TARGET_FILE:test_dist_methods> --test-suite=mpi)
else()
  add_test(NAME dist_methods.mpi2 COMMAND sh -c
           "echo 'SKIPPED: the mpi tests need MPI and mpirun (scripts/install_deps.sh installs libopenmpi-dev, openmpi-bin)'; exit 77")
endif()
set_tests_properties(dist_methods.mpi2 PROPERTIES LABELS mpi TIMEOUT 120 SKIP_RETURN_CODE 77 ENVIRONMENT "${_dist_env}")

# `sslight pretrain` data parallel on 2 ranks against one process, rank-0-only files (tests/test_dist_pretrain.cpp).
add_engine_test(dist_pretrain LABELS cpu TIMEOUT 120 LIBS sslight_apps)
if(TARGET test_dist_pretrain AND SSLIGHT_WITH_MPI AND _dist_mpirun)
  add_test(NAME dist_pretrain.mpi2 COMMAND ${_dist_mpirun} --allow-run-as-root --oversubscribe -np 2
           $<TARGET_FILE:test_dist_pretrain> --test-suite=mpi)
else()
  add_test(NAME dist_pretrain.mpi2 COMMAND sh -c
           "echo 'SKIPPED: the mpi tests need MPI and mpirun (scripts/install_deps.sh installs libopenmpi-dev, openmpi-bin)'; exit 77")
endif()
set_tests_properties(dist_pretrain.mpi2 PROPERTIES LABELS mpi TIMEOUT 180 SKIP_RETURN_CODE 77 ENVIRONMENT "${_dist_env}")
if(TARGET test_dist_pretrain AND SSLIGHT_WITH_MPI AND _dist_mpirun)
  # A rank killed (the launcher ends the job) or stalled (the collective timeout names it) in the middle of pretrain.
  foreach(sig KILL STOP)
    string(TOLOWER ${sig} _sig)
    add_test(NAME dist_pretrain.mpi_${_sig} COMMAND ${_dist_mpirun} --allow-run-as-root --oversubscribe -np 2
             $<TARGET_FILE:test_dist_pretrain> --test-suite=mpi_kill)
    set_tests_properties(dist_pretrain.mpi_${_sig} PROPERTIES LABELS mpi TIMEOUT 90 ENVIRONMENT
                         "${_dist_env};SSLIGHT_COLLECTIVE_TIMEOUT_S=5;SSLIGHT_TEST_SIGNAL=${sig}")
  endforeach()
  set_tests_properties(dist_pretrain.mpi_kill PROPERTIES PASS_REGULAR_EXPRESSION
                       "rank 1 .*exited on signal 9|collective [a-z_]+ #[0-9]+ timed out on rank 0")
  set_tests_properties(dist_pretrain.mpi_stop PROPERTIES PASS_REGULAR_EXPRESSION
                       "collective [a-z_]+ #[0-9]+ timed out on rank 0 .*ranks that did not arrive: 1;")
endif()
