# qpool_proto_library(NAME <target> PROTOS <files...> [GRPC])
# Generates C++ (and gRPC stubs with GRPC) from .proto files under proto/ into a static library.
function(qpool_proto_library)
  cmake_parse_arguments(ARG "GRPC" "NAME" "PROTOS;DEPS" ${ARGN})
  set(srcs)
  set(hdrs)
  set(gen_dir ${CMAKE_BINARY_DIR}/gen)
  file(MAKE_DIRECTORY ${gen_dir})
  foreach(proto ${ARG_PROTOS})
    get_filename_component(abs ${proto} ABSOLUTE)
    file(RELATIVE_PATH rel ${CMAKE_SOURCE_DIR}/proto ${abs})
    string(REGEX REPLACE "\\.proto$" "" base ${rel})
    set(outs ${gen_dir}/${base}.pb.cc ${gen_dir}/${base}.pb.h)
    set(args --cpp_out=${gen_dir})
    if(ARG_GRPC)
      list(APPEND outs ${gen_dir}/${base}.grpc.pb.cc ${gen_dir}/${base}.grpc.pb.h)
      list(APPEND args --grpc_out=${gen_dir}
           --plugin=protoc-gen-grpc=$<TARGET_FILE:gRPC::grpc_cpp_plugin>)
    endif()
    add_custom_command(
      OUTPUT ${outs}
      COMMAND protobuf::protoc ARGS ${args} -I ${CMAKE_SOURCE_DIR}/proto ${abs}
      DEPENDS ${abs} protobuf::protoc
      COMMENT "protoc ${rel}")
    list(APPEND srcs ${outs})
  endforeach()
  add_library(${ARG_NAME} STATIC ${srcs})
  target_include_directories(${ARG_NAME} PUBLIC ${gen_dir})
  target_link_libraries(${ARG_NAME} PUBLIC protobuf::libprotobuf ${ARG_DEPS})
  if(ARG_GRPC)
    target_link_libraries(${ARG_NAME} PUBLIC gRPC::grpc++)
  endif()
  target_compile_options(${ARG_NAME} PRIVATE -w)
endfunction()

# qpool_test(NAME <name> SOURCES <files...> LIBS <targets...> LABELS <labels...> [TIMEOUT s])
# A GoogleTest binary registered with ctest under the given labels. Its main()
# (tests/support/gtest_main.cc) exits 77 when a test GTEST_SKIP()ed and none failed, which ctest
# reports as "Not Run" (SKIP_RETURN_CODE), so a test whose tool is missing never shows as passed.
set(QPOOL_SKIP_RETURN_CODE 77)
function(qpool_test)
  cmake_parse_arguments(ARG "" "NAME;TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${ARG_NAME} ${ARG_SOURCES})
  target_link_libraries(${ARG_NAME} PRIVATE ${ARG_LIBS} qpool_gtest_main GTest::gmock)
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 120)
  endif()
  add_test(NAME ${ARG_NAME} COMMAND ${ARG_NAME})
  set_tests_properties(${ARG_NAME} PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT}
                       SKIP_RETURN_CODE ${QPOOL_SKIP_RETURN_CODE})
endfunction()

# qpool_tool_test(NAME <name> NEED <programs or paths...> [NEED_DIR <dirs...>] COMMAND <cmd...>
#                 LABELS <labels...> [TIMEOUT s])
# A test that drives an external program (promtool, node, ...): run through
# tests/support/run_if_found.sh, so that when a NEED is missing (empty: find_program found nothing)
# the test exits 77 and ctest reports it as "Not Run" instead of failing the configure or passing.
# find_program() leaves <VAR>-NOTFOUND for a missing program, which run_if_found.sh finds missing.
function(qpool_tool_test)
  cmake_parse_arguments(ARG "" "NAME;TIMEOUT;WORKING_DIRECTORY" "NEED;NEED_DIR;COMMAND;LABELS"
                        ${ARGN})
  set(guard)
  foreach(need ${ARG_NEED})
    list(APPEND guard --need "${need}")
  endforeach()
  foreach(dir ${ARG_NEED_DIR})
    list(APPEND guard --need-dir "${dir}")
  endforeach()
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 120)
  endif()
  if(NOT ARG_WORKING_DIRECTORY)
    set(ARG_WORKING_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR})
  endif()
  add_test(NAME ${ARG_NAME}
           COMMAND ${CMAKE_SOURCE_DIR}/tests/support/run_if_found.sh ${guard} -- ${ARG_COMMAND}
           WORKING_DIRECTORY ${ARG_WORKING_DIRECTORY})
  set_tests_properties(${ARG_NAME} PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT}
                       SKIP_RETURN_CODE ${QPOOL_SKIP_RETURN_CODE})
endfunction()
