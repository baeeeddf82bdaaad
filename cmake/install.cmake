# install.cmake — what `cmake --install` puts where (scripts/package builds
# the Debian package on top of these rules; the package adds the unit, the
# configuration, logrotate and the maintainer scripts in debian/).
#   flushgated             -> sbin (a daemon the operator does not type)
#   flushgate              -> bin  (the operators' and pppd scripts' CLI)
#   flushgated(8), flushgate(1), flushgated.cf(5)
#   bash completion for flushgate
# flushgated.cf.5 is generated from the one parameter table
# (flushgated --params-man), so it never drifts from the code.

set(flushgate_man_dir ${PROJECT_BINARY_DIR}/man)
add_custom_command(
  OUTPUT ${flushgate_man_dir}/flushgated.cf.5
  COMMAND ${CMAKE_COMMAND} -E make_directory ${flushgate_man_dir}
  COMMAND sh -c "\"$1\" --params-man > \"$2\"" generate-man
          $<TARGET_FILE:flushgated> ${flushgate_man_dir}/flushgated.cf.5
  DEPENDS flushgated
  COMMENT "Generating flushgated.cf(5) from the parameter table"
  VERBATIM)
add_custom_target(flushgate_man ALL DEPENDS ${flushgate_man_dir}/flushgated.cf.5)

install(TARGETS flushgated RUNTIME DESTINATION ${CMAKE_INSTALL_SBINDIR})
install(TARGETS flushgate RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(FILES docs/man/flushgate.1 DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)
install(FILES ${flushgate_man_dir}/flushgated.cf.5 DESTINATION ${CMAKE_INSTALL_MANDIR}/man5)
install(FILES docs/man/flushgated.8 DESTINATION ${CMAKE_INSTALL_MANDIR}/man8)
install(FILES scripts/completion/flushgate
        DESTINATION ${CMAKE_INSTALL_DATADIR}/bash-completion/completions)
